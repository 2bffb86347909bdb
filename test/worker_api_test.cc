// worker_api_test.cc - what issue 12 added for applications that speak
// their own protocol: the stderr sink with a level threshold, dropping
// privileges, and (with a real pool) a worker's wait and stop reason.
#include "harness.h"
#include "prefork.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <string>

#include <fcntl.h>
#include <poll.h>
#include <pwd.h>
#include <sys/wait.h>
#include <unistd.h>

using harness::Client;
using harness::TestServer;

// What f writes to stderr, read back through a pipe.
template <class F> static std::string stderr_of(F f) {
    int fds[2];
    if (pipe(fds) != 0) return "pipe failed";
    int saved = dup(2);
    dup2(fds[1], 2);
    f();
    dup2(saved, 2);
    close(saved);
    close(fds[1]);
    std::string out;
    char buffer[4096];
    ssize_t n;
    while ((n = read(fds[0], buffer, sizeof buffer)) > 0) out.append(buffer, size_t(n));
    close(fds[0]);
    return out;
}

TEST(LogToStderrAt, DropsTheLinesBelowItsLevel) {
    prefork::LogFn sink = prefork::log_to_stderr_at(prefork::LogLevel::info);
    std::string out = stderr_of([&] {
        sink(prefork::LogLevel::debug, "a debug line");
        sink(prefork::LogLevel::info, "an info line");
        sink(prefork::LogLevel::error, "an error line");
    });
    EXPECT_EQ(out.find("a debug line"), std::string::npos) << out;
    EXPECT_NE(out.find("[info] [pid " + std::to_string(getpid()) + "] an info line\n"), std::string::npos) << out;
    EXPECT_NE(out.find("[error] [pid " + std::to_string(getpid()) + "] an error line\n"), std::string::npos) << out;
    std::string all = stderr_of([] { prefork::log_to_stderr_at(prefork::LogLevel::debug)(prefork::LogLevel::debug, "shown"); });
    EXPECT_NE(all.find("[debug]"), std::string::npos) << all;
}

// As root, a forked child becomes nobody for good: every id changed, and
// root cannot be had back.
TEST(DropPrivileges, BecomesTheUserAndCannotRegainRoot) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    const passwd *nobody = getpwnam("nobody");
    if (!nobody) GTEST_SKIP() << "no user nobody here";
    uid_t uid = nobody->pw_uid;
    gid_t gid = nobody->pw_gid;
    pid_t child = fork();
    if (child == 0) {
        std::string error;
        if (prefork::drop_privileges("nobody", &error) != 0) _exit(1);
        if (getuid() != uid || geteuid() != uid || getgid() != gid || getegid() != gid) _exit(2);
        gid_t groups[64];
        int n = getgroups(64, groups);
        for (int i = 0; i < n; i++)
            if (groups[i] == 0) _exit(3);  // root's group kept
        if (setuid(0) == 0 || seteuid(0) == 0) _exit(4);
        _exit(0);
    }
    int status = -1;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    EXPECT_TRUE(WIFEXITED(status)) << status;
    EXPECT_EQ(WEXITSTATUS(status), 0) << "1: failed, 2: ids, 3: groups, 4: root regained";
}

TEST(DropPrivileges, AnUnknownUserIsOneSentence) {
    std::string error;
    EXPECT_EQ(prefork::drop_privileges("no-such-user-prefork", &error), -1);
    EXPECT_EQ(error, "cannot become user no-such-user-prefork: no such user");
}

// Becoming the user one already is changes nothing and cannot fail.
TEST(DropPrivileges, TheUserOneAlreadyIsIsNoChange) {
    const passwd *self = getpwuid(geteuid());
    ASSERT_NE(self, nullptr);
    std::string name = self->pw_name, error;
    EXPECT_EQ(prefork::drop_privileges(name, &error), 0) << error;
    EXPECT_EQ(geteuid(), self->pw_uid);
}

// ---- Worker::wait and Worker::stop_reason, in a real pool ----------------

static const char *reason_name(prefork::StopReason reason) {
    switch (reason) {
    case prefork::StopReason::none: return "none";
    case prefork::StopReason::restart: return "restart";
    case prefork::StopReason::drain: return "drain";
    case prefork::StopReason::retire: return "retire";
    case prefork::StopReason::timeout: return "timeout";
    case prefork::StopReason::parent_gone: return "parent_gone";
    case prefork::StopReason::signal: return "signal";
    }
    return "?";
}

// "stopped REASON LEFT": why the worker stops, and the milliseconds left
// before SIGKILL (0: none comes).
static std::string stop_report(prefork::Worker &w) {
    int64_t deadline = -1;
    prefork::StopReason reason = w.stop_reason(&deadline);
    long long left = deadline ? (long long)(deadline - harness::now_ms()) : 0;
    return std::string("stopped ") + reason_name(reason) + " " + std::to_string(left) + "\n";
}

// A line-protocol handler. "wait MS": answers "waiting PID", then waits up
// to MS (-1: no bound) for the client's next byte with Worker::wait and
// says what came: "ready", "timed out", or the stop report. "spin": answers
// "spinning PID", then polls stopping() without a heartbeat, and reports.
// "late": as spin, then waits for the bytes the client sent after the
// line, and says what came.
static void line_handler(prefork::Worker &w, int fd) {
    std::string line;
    char c;
    while (line.size() < 100 && read(fd, &c, 1) == 1 && c != '\n') line += c;
    auto reply = [fd](const std::string &text) { (void)!write(fd, text.data(), text.size()); };
    std::string pid = std::to_string(getpid());
    if (line == "spin" || line == "late") {
        reply("spinning " + pid + "\n");
        while (!w.stopping()) poll(nullptr, 0, 10);
        if (line == "late" && w.wait(fd, POLLIN, 1000) == 1) reply("ready\n");
        else reply(stop_report(w));
        return;
    }
    reply("waiting " + pid + "\n");
    int rc = w.wait(fd, POLLIN, atoi(line.c_str() + 5));
    if (rc == 1) reply("ready\n");
    else if (rc == 0) reply("timed out\n");
    else if (errno == ECANCELED) reply(stop_report(w));
    else reply(std::string("error ") + strerror(errno) + "\n");
}

// The number after the reason in "stopped REASON LEFT".
static long long left_in(const std::string &report) { return atoll(report.c_str() + report.rfind(' ') + 1); }

// Has a worker wait with no bound, sends sig to the parent, and returns
// the worker's report ("" if none came within 3 s).
static std::string wait_then_signal(TestServer &t, int sig) {
    Client c(t.address());
    if (!c.send("wait -1\n") || c.line().compare(0, 8, "waiting ") != 0 || !t.signal(sig)) return "";
    return c.line(3000);
}

static void start_line_server(TestServer &t) {
    t.handler = line_handler;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.graceful_timeout = 30;
    ASSERT_TRUE(t.start());
}

TEST(WorkerWait, SaysReadyOrTimedOut) {
    TestServer t;
    start_line_server(t);
    Client a(t.address());
    ASSERT_TRUE(a.send("wait 200\n"));
    ASSERT_EQ(a.line().compare(0, 8, "waiting "), 0);
    int64_t asked = harness::now_ms();
    EXPECT_EQ(a.line(), "timed out");
    EXPECT_GE(harness::now_ms() - asked, 150);
    Client b(t.address());
    ASSERT_TRUE(b.send("wait 5000\n"));
    ASSERT_EQ(b.line().compare(0, 8, "waiting "), 0);
    ASSERT_TRUE(b.send("x"));
    EXPECT_EQ(b.line(1000), "ready");
}

// A wait longer than the watchdog's timeout is no hang: it reports.
TEST(WorkerWait, ReportsToTheWatchdog) {
    TestServer t;
    t.options.timeout = 1;
    t.options.kill_grace = 0.3;
    start_line_server(t);
    Client c(t.address());
    ASSERT_TRUE(c.send("wait 2500\n"));
    ASSERT_EQ(c.line().compare(0, 8, "waiting "), 0);
    EXPECT_EQ(c.line(6000), "timed out") << t.log();
    EXPECT_TRUE(t.log_lines("timed out").empty()) << t.log();
}

// A graceful restart reaches a handler waiting on its client at once (not
// after graceful_timeout), and tells it that it has graceful_timeout.
TEST(WorkerWait, AGracefulRestartEndsItAtOnceWithItsDeadline) {
    TestServer t;
    start_line_server(t);
    std::string report = wait_then_signal(t, SIGHUP);
    EXPECT_EQ(report.compare(0, 16, "stopped restart "), 0) << report;
    EXPECT_GT(left_in(report), 25000) << report;
    EXPECT_LE(left_in(report), 30000) << report;
}

TEST(WorkerWait, ADrainEndsItAtOnceWithTheDrainsDeadline) {
    TestServer t;
    start_line_server(t);
    std::string report = wait_then_signal(t, SIGTERM);
    EXPECT_EQ(report.compare(0, 14, "stopped drain "), 0) << report;
    EXPECT_GT(left_in(report), 25000) << report;
    EXPECT_LE(left_in(report), 30000) << report;
    EXPECT_EQ(t.wait_exit(5000), 0);
}

TEST(WorkerWait, TheParentsDeathEndsIt) {
    TestServer t;
    start_line_server(t);
    t.expect_clean_ipc = false;  // a parent killed leaves its semaphore set
    EXPECT_EQ(wait_then_signal(t, SIGKILL), "stopped parent_gone 0");
}

// A SIGTERM that the pool did not send (someone's kill) has no deadline.
TEST(WorkerWait, ASigtermFromOutsideEndsIt) {
    TestServer t;
    start_line_server(t);
    Client c(t.address());
    ASSERT_TRUE(c.send("wait -1\n"));
    pid_t worker = pid_t(atol(c.line().c_str() + 8));
    ASSERT_GT(worker, 0);
    ASSERT_EQ(kill(worker, SIGTERM), 0);
    EXPECT_EQ(c.line(3000), "stopped signal 0");
}

TEST(WorkerWait, WorksInSingleProcessMode) {
    TestServer t;
    t.options.single_process = true;
    start_line_server(t);
    Client a(t.address());
    ASSERT_TRUE(a.send("wait 100\n"));
    EXPECT_EQ(a.line().compare(0, 8, "waiting "), 0);
    EXPECT_EQ(a.line(), "timed out");
    EXPECT_EQ(wait_then_signal(t, SIGTERM), "stopped drain 0");
    EXPECT_EQ(t.wait_exit(5000), 0);
}

// The watchdog's SIGTERM names itself, with kill_grace left.
TEST(WorkerStopReason, TheWatchdogGivesKillGrace) {
    TestServer t;
    t.options.timeout = 1;
    t.options.kill_grace = 10;
    start_line_server(t);
    Client c(t.address());
    ASSERT_TRUE(c.send("spin\n"));
    ASSERT_EQ(c.line().compare(0, 9, "spinning "), 0);
    std::string report = c.line(6000);
    EXPECT_EQ(report.compare(0, 16, "stopped timeout "), 0) << report;
    EXPECT_GT(left_in(report), 8000) << report;
    EXPECT_LE(left_in(report), 10000) << report;
}

// Once the worker should stop, wait() says so even with the client's bytes
// already there: a client that keeps talking cannot hold a stopping worker.
TEST(WorkerWait, TheStopComesBeforeAReadyDescriptor) {
    TestServer t;
    start_line_server(t);
    Client c(t.address());
    ASSERT_TRUE(c.send("late\nmore"));
    ASSERT_EQ(c.line().compare(0, 9, "spinning "), 0);
    ASSERT_TRUE(t.signal(SIGHUP));
    std::string report = c.line(3000);
    EXPECT_EQ(report.compare(0, 16, "stopped restart "), 0) << report;
}
