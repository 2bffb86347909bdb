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
