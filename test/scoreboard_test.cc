// scoreboard_test.cc - the System V scoreboard on its own: layout, snapshot,
// rendering, the SEM_UNDO lock, and that nothing outlives its creator.
#include "harness.h"
#include "prefork.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstring>

#include <poll.h>
#include <sys/sem.h>
#include <sys/wait.h>
#include <unistd.h>

using prefork::Scoreboard;
using prefork::SlotState;

TEST(Scoreboard, CreatesSlotsAndRemovesEverythingOnDestroy) {
    Scoreboard board;
    std::string error;
    ASSERT_EQ(board.create(16, &error), 0) << error;
    EXPECT_EQ(board.slot_count(), 16);
    EXPECT_EQ(harness::ipc_objects_of(getpid()), 2);
    EXPECT_EQ(harness::unremoved_segments_of(getpid()), 0) << "the segment should be IPC_RMID at once";
    board.destroy();
    EXPECT_EQ(harness::ipc_objects_of(getpid()), 0);
    EXPECT_FALSE(board.ready());
}

TEST(Scoreboard, SnapshotCountsStatesAndRendersApacheLetters) {
    Scoreboard board;
    std::string error;
    ASSERT_EQ(board.create(6, &error), 0) << error;
    board.slot(0).state = SlotState::idle;
    board.slot(0).pid = 100;
    board.slot(1).state = SlotState::busy;
    board.slot(1).requests = 7;
    board.slot(2).state = SlotState::busy;
    board.slot(2).activity = 'K';
    board.slot(3).state = SlotState::starting;
    board.slot(4).state = SlotState::exiting;
    strcpy(board.slot(1).request, "GET / HTTP/1.1");
    prefork::Snapshot s = board.snapshot();
    EXPECT_EQ(s.idle, 1);
    EXPECT_EQ(s.busy, 2);
    EXPECT_EQ(s.starting, 1);
    EXPECT_EQ(s.exiting, 1);
    EXPECT_EQ(s.requests, 7u);
    EXPECT_STREQ(s.slots[1].request, "GET / HTTP/1.1");
    std::string text = s.render();
    EXPECT_EQ(text.substr(text.find('\n') + 1), "_WKSG.");
    EXPECT_NE(text.find("2 busy, 1 idle"), std::string::npos) << text;
}

// Forks a child in a process group of its own that runs f, which writes
// one byte to `ready` when it is in position. Waits for that byte with a
// deadline; the child is killed with its group when the test ends.
class Helper {
public:
    template <class F> explicit Helper(F f) {
        if (pipe(fds_) != 0) return;
        pid_ = fork();
        if (pid_ == 0) {
            setpgid(0, 0);
            close(fds_[0]);
            f(fds_[1]);
            _exit(0);
        }
        setpgid(pid_, pid_);
        close(fds_[1]);
        fds_[1] = -1;
    }
    ~Helper() {
        if (pid_ > 0) {
            kill(-pid_, SIGKILL);
            waitpid(pid_, nullptr, 0);
        }
        if (fds_[0] >= 0) close(fds_[0]);
    }
    bool ready(int timeout_ms = 5000) {
        pollfd p = {fds_[0], POLLIN, 0};
        char c;
        return poll(&p, 1, timeout_ms) == 1 && read(fds_[0], &c, 1) == 1;
    }
    pid_t pid() const { return pid_; }
    void kill_now() {
        kill(-pid_, SIGKILL);
        waitpid(pid_, nullptr, 0);
        pid_ = -1;
    }

private:
    int fds_[2] = {-1, -1};
    pid_t pid_ = -1;
};

// A scoreboard's creator that signals `ready` and waits to be killed.
static void create_a_board_and_wait(int ready) {
    Scoreboard board;
    std::string error;
    if (board.create(2, &error) != 0) _exit(1);
    (void)!write(ready, "x", 1);
    for (;;) pause();
}

// A child takes the lock and is killed with SIGKILL while holding it. With
// SEM_UNDO the kernel gives the lock back; without it this would hang.
TEST(Scoreboard, LockHeldByAKilledProcessIsReleased) {
    Scoreboard board;
    std::string error;
    ASSERT_EQ(board.create(2, &error), 0) << error;
    Helper holder([&](int ready) {
        board.lock();
        (void)!write(ready, "x", 1);
        for (;;) pause();
    });
    ASSERT_TRUE(holder.ready());
    // The lock is really held: a bounded attempt gives up.
    EXPECT_EQ(board.lock(20), -1);
    EXPECT_EQ(errno, EAGAIN);
    holder.kill_now();
    EXPECT_EQ(board.lock(2000), 0) << "SEM_UNDO did not give the lock back";
    board.unlock();
}

// A parent killed with SIGKILL leaves its semaphore set behind (nothing
// runs to remove it). The next scoreboard created by this user removes it,
// knowing it is dead because its `alive` semaphore fell to 0.
TEST(Scoreboard, SetLeftByAKilledCreatorIsRemovedAtNextCreate) {
    Helper creator(create_a_board_and_wait);
    ASSERT_TRUE(creator.ready());
    pid_t dead = creator.pid();
    creator.kill_now();
    if (harness::ipc_objects_of(dead) == 0)
        GTEST_SKIP() << "another prefork process of this user swept the set first";
    std::vector<std::string> logged;
    Scoreboard board;
    std::string error;
    ASSERT_EQ(board.create(2, &error, [&](prefork::LogLevel, const char *m) { logged.push_back(m); }), 0);
    EXPECT_EQ(harness::ipc_objects_of(dead), 0);
    bool named = false;
    for (const std::string &line : logged)
        named |= line.find("left by dead parent " + std::to_string(dead)) != std::string::npos;
    EXPECT_TRUE(named);
}

// A live creator's set is never swept, whatever its pid looks like from here.
TEST(Scoreboard, SetOfALiveCreatorIsKept) {
    Helper creator(create_a_board_and_wait);
    ASSERT_TRUE(creator.ready());
    Scoreboard board;
    std::string error;
    ASSERT_EQ(board.create(2, &error), 0) << error;
    EXPECT_EQ(harness::ipc_objects_of(creator.pid()), 2);  // its semaphore set and segment
}
