// httpd_fixture.h - runs the httpd program for the tests that need it
// (httpd_test.cc, cgi_test.cc): ./httpd or PREFORK_TEST_HTTPD, through
// PREFORK_TEST_LAUNCHER when set, in a process group of its own.
#ifndef PREFORK_TEST_HTTPD_FIXTURE_H
#define PREFORK_TEST_HTTPD_FIXTURE_H

#include "harness.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

using harness::Client;
using harness::eventually;

namespace {

// The httpd under test: ./httpd, or PREFORK_TEST_HTTPD; run through
// PREFORK_TEST_LAUNCHER when set (make cross-test: qemu-user, which keeps
// the pid, so signals and /proc work as for a native run).
inline std::string httpd_path() {
    const char *path = getenv("PREFORK_TEST_HTTPD");
    return path && *path ? path : "./httpd";
}
inline std::string test_launcher() {
    const char *launcher = getenv("PREFORK_TEST_LAUNCHER");
    return launcher ? launcher : "";
}

inline std::string slurp(const std::string &path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

// One run of ./httpd with the given arguments, in a harness::ProcessGroup
// (killed with its group at the end). Started by root, httpd
// refuses to run its workers as root unless told; as_invoker adds
// "--user root" then (when no --user is given), so the other tests run it
// as whoever runs them.
class Httpd {
public:
    explicit Httpd(std::vector<std::string> args, bool as_invoker = true,
                   const std::function<void()> &in_child = nullptr, std::string program = "") {
        if (program.empty()) program = httpd_path();
        if (as_invoker && geteuid() == 0 && std::find(args.begin(), args.end(), "--user") == args.end()) {
            args.insert(args.begin(), "root");
            args.insert(args.begin(), "--user");
        }
        char dir[] = "/tmp/prefork-httpd-XXXXXX";
        scratch_ = mkdtemp(dir);
        chmod(scratch_.c_str(), 0755);
        socket_ = scratch_ + "/s.sock";
        stderr_ = scratch_ + "/stderr";
        for (std::string &a : args) {
            size_t at;
            while ((at = a.find("@")) != std::string::npos) a.replace(at, 1, scratch_);
        }
        group_.start([&] {
            int err = open(stderr_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            dup2(err, 2);
            if (in_child) in_child();
            return harness::exec_program(program, args);
        });
    }
    ~Httpd() {
        group_.stop(3000);
        group_.kill_group();  // before its stderr file goes
        std::string rm = "rm -rf " + scratch_;
        if (system(rm.c_str()) != 0) {}
    }
    // The wait status once it exits, -1 on timeout.
    int wait(int timeout_ms) { return group_.wait_exit(timeout_ms); }
    bool ready() { return eventually([&] { return Client("unix:" + socket_).connected(); }); }
    // Ready, and the parent is in run() with its signal handlers installed:
    // the socket takes connections from listen() on, and a SIGUSR2 sent
    // before run() would end httpd (the default action).
    bool running() { return ready() && wait_log("prefork parent ", 1); }
    // Waits until needle occurs count times in what httpd wrote to stderr.
    bool wait_log(const std::string &needle, int count, int timeout_ms = 5000) const {
        return eventually([&] {
            std::string log = stderr_text();
            int n = 0;
            for (size_t at = 0; (at = log.find(needle, at)) != std::string::npos; at += needle.size()) n++;
            return n >= count;
        }, timeout_ms);
    }
    std::string stderr_text() const { return slurp(stderr_); }
    const std::string &scratch() const { return scratch_; }
    std::string address() const { return "unix:" + socket_; }
    pid_t pid() const { return group_.pid(); }

private:
    std::string scratch_, socket_, stderr_;
    harness::ProcessGroup group_;
};

inline bool have_httpd() { return access(httpd_path().c_str(), X_OK) == 0; }

// Runs a shell command, returns its standard output.
inline std::string run(const std::string &command) {
    std::string out;
    FILE *p = popen(command.c_str(), "r");
    if (!p) return out;
    char buffer[4096];
    size_t n;
    while ((n = fread(buffer, 1, sizeof buffer, p)) > 0) out.append(buffer, n);
    pclose(p);
    return out;
}

}  // namespace

// A missing httpd is a failure, never a skip: every make target that runs
// these tests builds the httpd it names.
#define NEED_HTTPD() \
    ASSERT_TRUE(have_httpd()) << "no " << httpd_path() << " here: run from the repository root after make"

#endif
