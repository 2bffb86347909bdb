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

// A child takes the lock and is killed with SIGKILL while holding it. With
// SEM_UNDO the kernel gives the lock back; without it this would hang.
TEST(Scoreboard, LockHeldByAKilledProcessIsReleased) {
    Scoreboard board;
    std::string error;
    ASSERT_EQ(board.create(2, &error), 0) << error;
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    pid_t child = fork();
    if (child == 0) {
        board.lock();
        (void)!write(ready[1], "x", 1);
        for (;;) pause();
    }
    char c;
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    // The lock is really held: a non-waiting attempt fails.
    sembuf try_lock = {0, -1, IPC_NOWAIT};
    EXPECT_EQ(semop(board.semaphore_id(), &try_lock, 1), -1);
    EXPECT_EQ(errno, EAGAIN);
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    EXPECT_TRUE(harness::eventually([&] {
        sembuf op = {0, -1, short(IPC_NOWAIT | SEM_UNDO)};
        return semop(board.semaphore_id(), &op, 1) == 0;
    }, 2000));
    board.unlock();
    close(ready[0]);
    close(ready[1]);
}

// A parent killed with SIGKILL leaves its semaphore set behind (nothing
// runs to remove it). The next scoreboard created by this user removes it.
TEST(Scoreboard, SetLeftByAKilledCreatorIsRemovedAtNextCreate) {
    int ready[2];
    ASSERT_EQ(pipe(ready), 0);
    pid_t child = fork();
    if (child == 0) {
        Scoreboard board;
        std::string error;
        if (board.create(2, &error) != 0) _exit(1);
        (void)!write(ready[1], "x", 1);
        for (;;) pause();
    }
    char c;
    ASSERT_EQ(read(ready[0], &c, 1), 1);
    kill(child, SIGKILL);
    waitpid(child, nullptr, 0);
    EXPECT_EQ(harness::ipc_objects_of(child), 1) << "the killed creator's semaphore set should remain";
    std::vector<std::string> logged;
    Scoreboard board;
    std::string error;
    ASSERT_EQ(board.create(2, &error, [&](prefork::LogLevel, const char *m) { logged.push_back(m); }), 0);
    EXPECT_EQ(harness::ipc_objects_of(child), 0);
    ASSERT_FALSE(logged.empty());
    EXPECT_NE(logged[0].find("left by dead parent " + std::to_string(child)), std::string::npos)
        << logged[0];
    close(ready[0]);
    close(ready[1]);
}
