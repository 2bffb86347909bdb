// sys_test.cc - the syscall wrappers and the self-pipe. Both are static in
// prefork.cc, so this file includes prefork.cc itself, and the test binary
// links this object instead of prefork.o: the library's symbols then come
// from here, the same code built with the same flags.
//
// An interruption is made, not hoped for: a helper thread waits until the
// test thread sleeps in the kernel (its state in /proc), then signals it
// with a handler installed without SA_RESTART. A raw call interrupted so
// fails with EINTR (RawReadSeesTheInterruption proves it), which is what
// the wrappers are tested against.
#include "../prefork.cc"

#include "harness.h"

#include <gtest/gtest.h>

#include <pthread.h>
#include <sys/syscall.h>

#include <limits>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace prefork;

bool close_on_exec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }
bool nonblocking(int fd) { return (fcntl(fd, F_GETFL) & O_NONBLOCK) != 0; }

// The self-pipe as run() sets it up, with on_signal on SIGUSR1 and
// SIGUSR2; the dispositions and the mask are restored afterwards.
class SelfPipe : public ::testing::Test {
protected:
    void SetUp() override {
        ASSERT_EQ(signal_pipe_write_end, -1) << "a Server is running in the test process";
        ASSERT_EQ(sys::pipe(fds_), 0) << strerror(errno);
        ASSERT_TRUE(nonblocking(fds_[0]) && nonblocking(fds_[1])) << "draining would hang";
        installed_ = true;
        signal_pipe_write_end = fds_[1];
        set_disposition(SIGUSR1, on_signal, &saved_[0]);
        set_disposition(SIGUSR2, on_signal, &saved_[1]);
        sigset_t both;
        sigemptyset(&both);
        sigaddset(&both, SIGUSR1);
        sigaddset(&both, SIGUSR2);
        pthread_sigmask(SIG_UNBLOCK, &both, &saved_mask_);
    }
    void TearDown() override {
        if (installed_) {
            sigaction(SIGUSR1, &saved_[0], nullptr);
            sigaction(SIGUSR2, &saved_[1], nullptr);
            pthread_sigmask(SIG_SETMASK, &saved_mask_, nullptr);
            signal_pipe_write_end = -1;
        }
        sys::close(fds_[0]);
        sys::close(fds_[1]);
    }
    std::vector<int> drained() {
        std::vector<int> bytes;
        drain_pipe(fds_[0], [&](unsigned char byte) { bytes.push_back(byte); });
        return bytes;
    }

    int fds_[2] = {-1, -1};
    bool installed_ = false;
    struct sigaction saved_[2];
    sigset_t saved_mask_;
};

TEST_F(SelfPipe, IsNonblockingAndCloseOnExecAtBothEnds) {
    for (int fd : fds_) {
        EXPECT_TRUE(nonblocking(fd)) << fd;
        EXPECT_TRUE(close_on_exec(fd)) << fd;
    }
}

TEST_F(SelfPipe, EachSignalIsOneByteInOrder) {
    // raise() returns only after the handler has run.
    raise(SIGUSR1);
    raise(SIGUSR1);
    raise(SIGUSR2);
    raise(SIGUSR1);
    EXPECT_EQ(drained(), (std::vector<int>{SIGUSR1, SIGUSR1, SIGUSR2, SIGUSR1}));
}

TEST_F(SelfPipe, SignalsPendingTogetherCoalesceButTheLastStillArrives) {
    sigset_t both, before;
    sigemptyset(&both);
    sigaddset(&both, SIGUSR1);
    sigaddset(&both, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &both, &before);
    for (int i = 0; i < 3; i++) raise(SIGUSR1);
    raise(SIGUSR2);
    pthread_sigmask(SIG_SETMASK, &before, nullptr);
    std::vector<int> bytes;
    EXPECT_TRUE(harness::eventually([&] {
        for (int byte : drained()) bytes.push_back(byte);
        return std::count(bytes.begin(), bytes.end(), SIGUSR2) == 1;
    }, 2000));
    long usr1 = std::count(bytes.begin(), bytes.end(), SIGUSR1);
    EXPECT_GE(usr1, 1);
    EXPECT_LE(usr1, 3);
    EXPECT_EQ(bytes.size(), size_t(usr1) + 1);
}

TEST_F(SelfPipe, DrainsToEAGAIN) {
    raise(SIGUSR1);
    raise(SIGUSR2);
    EXPECT_EQ(drained().size(), 2u);
    char byte;
    errno = 0;
    EXPECT_EQ(sys::read(fds_[0], &byte, 1), -1);
    EXPECT_EQ(errno, EAGAIN);
}

TEST_F(SelfPipe, HandlerKeepsErrnoEvenWhenThePipeIsFull) {
    errno = EDOM;
    raise(SIGUSR1);
    EXPECT_EQ(errno, EDOM);
    // Full: the handler's write fails with EAGAIN (it must not block), and
    // the caller must still not see that.
    ASSERT_TRUE(nonblocking(fds_[1]));
    char block[4096] = {};
    while (sys::write(fds_[1], block, sizeof block) > 0) {
    }
    while (sys::write(fds_[1], block, 1) > 0) {
    }
    ASSERT_EQ(errno, EAGAIN);
    errno = EDOM;
    raise(SIGUSR2);
    EXPECT_EQ(errno, EDOM);
    std::vector<int> bytes = drained();
    ASSERT_FALSE(bytes.empty());
    EXPECT_EQ(bytes[0], SIGUSR1);
}

TEST_F(SelfPipe, DispositionBlocksEverySignalAndRestarts) {
    struct sigaction now;
    sigaction(SIGUSR1, nullptr, &now);
    EXPECT_EQ(now.sa_handler, on_signal);
    EXPECT_TRUE(now.sa_flags & SA_RESTART);
    for (int other : {SIGTERM, SIGCHLD, SIGHUP, SIGUSR2}) EXPECT_TRUE(sigismember(&now.sa_mask, other)) << other;
}

TEST(SysWrappers, EveryDescriptorIsBornCloseOnExec) {
    std::vector<int> fds;
    int pair[2];
    ASSERT_EQ(sys::socket_pair(pair), 0);
    EXPECT_TRUE(nonblocking(pair[0]) && nonblocking(pair[1]));
    fds.insert(fds.end(), {pair[0], pair[1]});
    int plain = sys::socket(AF_INET, SOCK_STREAM);
    EXPECT_FALSE(nonblocking(plain));
    int listener = sys::socket(AF_INET, SOCK_STREAM, true);
    EXPECT_TRUE(nonblocking(listener));
    int directory = sys::openat(AT_FDCWD, "/", O_RDONLY | O_DIRECTORY);
    int beneath = sys::open_beneath(directory, ".", O_RDONLY);
    int copy = sys::duplicate(directory, 100);
    EXPECT_GE(copy, 100);
    fds.insert(fds.end(), {plain, listener, directory, beneath, copy});

    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr *>(&address), length), 0);
    ASSERT_EQ(listen(listener, 1), 0);
    ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr *>(&address), &length), 0);
    ASSERT_EQ(sys::connect(plain, reinterpret_cast<sockaddr *>(&address), length), 0);
    int accepted = sys::accept(listener, nullptr, nullptr);
    EXPECT_FALSE(nonblocking(accepted)) << "accept() hands out blocking connections";
    fds.push_back(accepted);

    std::string saved = getenv("NOTIFY_SOCKET") ? getenv("NOTIFY_SOCKET") : "";
    setenv("NOTIFY_SOCKET", "@prefork-sys-test", 1);
    sockaddr_un to;
    socklen_t to_length;
    fds.push_back(sys::notify_open(&to, &to_length));
    if (saved.empty()) unsetenv("NOTIFY_SOCKET");
    else setenv("NOTIFY_SOCKET", saved.c_str(), 1);

    for (size_t i = 0; i < fds.size(); i++) {
        EXPECT_GE(fds[i], 0) << "descriptor " << i;
        EXPECT_TRUE(close_on_exec(fds[i])) << "descriptor " << i;
    }
    // dup2 is the one that must not be: it hands a descriptor to a program.
    int handed = sys::dup2(directory, copy + 1);
    EXPECT_EQ(handed, copy + 1);
    EXPECT_FALSE(close_on_exec(handed));
    fds.push_back(handed);
    for (int fd : fds) sys::close(fd);
}

// A process of the normal policy becomes a batch one; one given another
// policy before (here SCHED_IDLE, as by chrt --idle) keeps it. In a child:
// a process cannot always go back from SCHED_IDLE.
TEST(SysWrappers, BatchSchedulingKeepsAPolicyChosenBefore) {
#ifndef SCHED_BATCH
    GTEST_SKIP() << "no SCHED_BATCH here";
#else
    for (int before : {SCHED_OTHER, SCHED_IDLE}) {
        pid_t child = fork();
        ASSERT_GE(child, 0);
        if (child == 0) {
            sched_param none{};
            if (sched_setscheduler(0, before, &none) != 0) _exit(100);
            sys::use_batch_scheduling();
            _exit(sched_getscheduler(0));
        }
        int status = 0;
        ASSERT_EQ(waitpid(child, &status, 0), child);
        ASSERT_TRUE(WIFEXITED(status));
        if (WEXITSTATUS(status) == 100) GTEST_SKIP() << "cannot set policy " << before << " here";
        EXPECT_EQ(WEXITSTATUS(status), before == SCHED_OTHER ? SCHED_BATCH : before) << "policy before: " << before;
    }
#endif
}

TEST(SysWrappers, KeepErrnoOnSuccessAndCloseIsNoOpOnMinusOne) {
    int fds[2];
    ASSERT_EQ(sys::pipe(fds), 0);
    errno = EDOM;
    EXPECT_EQ(sys::write(fds[1], "x", 1), 1);
    char byte;
    EXPECT_EQ(sys::read(fds[0], &byte, 1), 1);
    EXPECT_EQ(sys::close(-1), 0);
    EXPECT_EQ(sys::close(fds[0]), 0);
    EXPECT_EQ(sys::close(fds[1]), 0);
    EXPECT_EQ(errno, EDOM);
}

// --- Interrupted calls ----------------------------------------------------

std::atomic<int> handled{0};
void count_signal(int) { handled++; }

// 'S' while the thread sleeps in a system call; 0 if unreadable.
char thread_state(pid_t tid) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/self/task/%d/stat", int(tid));
    FILE *file = fopen(path, "r");
    if (!file) return 0;
    size_t n = fread(line, 1, sizeof line - 1, file);
    fclose(file);
    line[n] = '\0';
    const char *end = strrchr(line, ')');  // the name may hold spaces
    return end && end[1] == ' ' ? end[2] : 0;
}

// Runs call() on this thread and interrupts it exactly once while it sleeps
// in the kernel, with SIGUSR1 under a handler without SA_RESTART. Once the
// thread sleeps again (in a retried call, or in the join below), one byte
// goes to feed_fd so that a retried call has something to return. Returns
// what call() returned, with its errno; the disposition and mask are
// restored.
template <class Call> long interrupted(Call call, int feed_fd) {
    pid_t tid = pid_t(syscall(SYS_gettid));
    pthread_t self = pthread_self();
    handled = 0;
    struct sigaction action, saved;
    memset(&action, 0, sizeof action);
    action.sa_handler = count_signal;
    sigemptyset(&action.sa_mask);
    sigaction(SIGUSR1, &action, &saved);
    sigset_t usr1, saved_mask;
    sigemptyset(&usr1);
    sigaddset(&usr1, SIGUSR1);
    pthread_sigmask(SIG_UNBLOCK, &usr1, &saved_mask);

    bool slept = false, was_handled = false;
    std::thread helper([&] {
        slept = harness::eventually([&] { return thread_state(tid) == 'S'; });
        if (slept) pthread_kill(self, SIGUSR1);
        was_handled = harness::eventually([&] { return handled == 1; });
        harness::eventually([&] { return thread_state(tid) == 'S'; });
        (void)!::write(feed_fd, "x", 1);
    });
    long rc = call();
    int call_errno = errno;
    helper.join();
    sigaction(SIGUSR1, &saved, nullptr);
    pthread_sigmask(SIG_SETMASK, &saved_mask, nullptr);
    EXPECT_TRUE(slept) << "the call never slept";
    EXPECT_TRUE(was_handled) << "the signal was not handled";
    EXPECT_EQ(handled, 1);
    errno = call_errno;
    return rc;
}

// A blocking pipe: sys::pipe's are nonblocking.
struct BlockingPipe {
    int fds[2] = {-1, -1};
    BlockingPipe() {
        EXPECT_EQ(sys::pipe(fds), 0);
        sys::set_flags(fds[0], false);
    }
    ~BlockingPipe() {
        sys::close(fds[0]);
        sys::close(fds[1]);
    }
};

TEST(SysWrappers, RawReadSeesTheInterruption) {
    BlockingPipe pipe;
    char byte = 0;
    long n = interrupted([&] { return long(::read(pipe.fds[0], &byte, 1)); }, pipe.fds[1]);
    EXPECT_EQ(n, -1) << "the harness did not interrupt the read; the tests below prove nothing";
    EXPECT_EQ(errno, EINTR);
}

TEST(SysWrappers, ReadRetriesEINTRAndReturnsTheData) {
    BlockingPipe pipe;
    char byte = 0;
    errno = EDOM;
    long n = interrupted([&] { return long(sys::read(pipe.fds[0], &byte, 1)); }, pipe.fds[1]);
    EXPECT_EQ(n, 1);
    EXPECT_EQ(byte, 'x');
    EXPECT_EQ(errno, EDOM) << "the EINTR on the way must not show";
}

TEST(SysWrappers, WaitsReportEINTRAsNothingReady) {
    BlockingPipe pipe;
    pollfd fd = {pipe.fds[0], POLLIN, 0};
    sigset_t none;
    sigemptyset(&none);
    errno = EDOM;
    EXPECT_EQ(interrupted([&] { return long(sys::poll(&fd, 1, -1)); }, pipe.fds[1]), 0);
    EXPECT_EQ(errno, EDOM);

    BlockingPipe second;
    fd.fd = second.fds[0];
    EXPECT_EQ(interrupted([&] { return long(sys::poll_with_mask(&fd, 1, -1, &none)); }, second.fds[1]), 0);
    EXPECT_EQ(errno, EDOM);

    BlockingPipe third;
    sys::Waiter waiter(&third.fds[0], 1, 0);
    char ready[1] = {1};
    EXPECT_EQ(interrupted([&] { return long(waiter.wait(-1, &none, ready)); }, third.fds[1]), 0);
    EXPECT_EQ(errno, EDOM);
    EXPECT_EQ(ready[0], 0);
}

TEST(SysWrappers, ReceivePassesEINTRUp) {
    int pair[2];
    ASSERT_EQ(sys::socket_pair(pair), 0);
    sys::set_flags(pair[0], false);
    char byte = 0;
    long n = interrupted([&] { return long(sys::receive(pair[0], &byte, 1, true)); }, pair[1]);
    EXPECT_EQ(n, -1);
    EXPECT_EQ(errno, EINTR);
    sys::close(pair[0]);
    sys::close(pair[1]);
}

// Date and Last-Modified come from utc_time(), not gmtime_r: every day from
// 1900 to 2400 (leap centuries both ways), at a second that moves through
// the day, and around the epoch, must give what glibc gives; times outside
// years 1000 to 9999 are clamped to them.
TEST(UtcTime, AgreesWithGmtimeFrom1900To2400) {
    const int64_t first = -2208988800LL, last = 13569465600LL;  // 1900-01-01, 2400-01-01
    int checked = 0;
    for (int64_t t = first, step = 0; t <= last; t += 86400 + (step++ % 97) * 7) {
        for (int64_t at : {t, t - 1, t + 43199}) {
            time_t when = time_t(at);
            struct tm want, got;
            ASSERT_NE(gmtime_r(&when, &want), nullptr);
            utc_time(when, got);
            ASSERT_EQ(got.tm_year, want.tm_year) << at;
            ASSERT_EQ(got.tm_mon, want.tm_mon) << at;
            ASSERT_EQ(got.tm_mday, want.tm_mday) << at;
            ASSERT_EQ(got.tm_hour, want.tm_hour) << at;
            ASSERT_EQ(got.tm_min, want.tm_min) << at;
            ASSERT_EQ(got.tm_sec, want.tm_sec) << at;
            ASSERT_EQ(got.tm_wday, want.tm_wday) << at;
            ASSERT_EQ(got.tm_yday, want.tm_yday) << at;
            checked++;
        }
    }
    EXPECT_GT(checked, 3 * 180000);
    char text[40];
    struct tm tm;
    utc_time(784887151, tm);
    strftime(text, sizeof text, http_date_pattern, &tm);
    EXPECT_STREQ(text, "Tue, 15 Nov 1994 08:12:31 GMT");  // RFC 9110's example
    // A file's mtime can be anything: a 64-bit time_t's ends are clamped, a
    // 32-bit one's (armhf) are ordinary dates.
    const bool wide = sizeof(time_t) >= 8;
    utc_time(std::numeric_limits<time_t>::max(), tm);
    strftime(text, sizeof text, http_date_pattern, &tm);
    EXPECT_STREQ(text, wide ? "Fri, 31 Dec 9999 23:59:59 GMT" : "Tue, 19 Jan 2038 03:14:07 GMT");
    utc_time(std::numeric_limits<time_t>::min(), tm);
    strftime(text, sizeof text, http_date_pattern, &tm);
    EXPECT_STREQ(text, wide ? "Wed, 01 Jan 1000 00:00:00 GMT" : "Fri, 13 Dec 1901 20:45:52 GMT");
}

}  // namespace
