// httpd_test.cc - the httpd program itself: its options and their errors,
// and what it serves, checked with raw sockets and with curl. It runs the
// ./httpd that `make` built, listening on a UNIX socket (no port races),
// in a process group of its own.
#include "harness.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdio>
#include <algorithm>
#include <fstream>
#include <functional>
#include <sstream>
#include <thread>
#include <atomic>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <grp.h>
#include <pwd.h>
#include <netinet/in.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using harness::Client;
using harness::eventually;

#include "httpd_fixture.h"


TEST(HttpdProgram, BadOptionsAreRefusedWithOneLineAndExit2) {
    NEED_HTTPD();
    struct Case { std::vector<std::string> args; std::string says; };
    const std::vector<Case> cases = {
        {{"--start-servers", "many"}, "bad value 'many' for --start-servers"},
        {{"--max-clients", "0"}, "max_clients must be between 1 and 100000 (got 0)"},
        {{"--frobnicate", "1"}, "unknown option --frobnicate"},
        {{"--timeout"}, "option --timeout needs a value"},
        {{"--status-path", "no-slash"}, "bad value 'no-slash' for --status-path"},
        {{"--status-allow", "10.0.0.0/33"}, "bad value '10.0.0.0/33' for --status-allow"},
        {{"--max-clients-per-ip", "x"}, "bad value 'x' for --max-clients-per-ip"},
        {{"--min-rate", "-1"}, "bad value '-1' for --min-rate"},
        {{"--pressure-timeout", "0"}, "bad value '0' for --pressure-timeout"},
        {{"--upgrade-timeout", "0"}, "upgrade_timeout must be a finite number of seconds from 0.01"},
        {{"--listen", "unix:@/s.sock", "/no/such/docroot"}, "cannot serve /no/such/docroot"},
        {{"--user", "no-such-user-here"}, "unknown user 'no-such-user-here' for --user"},
        {{"a", "b"}, "unexpected argument 'b'"},
    };
    for (const Case &c : cases) {
        Httpd h(c.args);
        int status = h.wait(5000);
        ASSERT_GE(status, 0) << "still running with " << c.says;
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << c.says;
        std::string err = h.stderr_text();
        EXPECT_NE(err.find(c.says), std::string::npos) << err;
        EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
    }
}

TEST(HttpdProgram, AListenerInUseIsExit1) {
    NEED_HTTPD();
    prefork::Server holder;
    ASSERT_EQ(holder.listen("127.0.0.1:0"), 0);
    std::string spec = holder.address(0);
    Httpd h({"--listen", spec});
    int status = h.wait(5000);
    ASSERT_GE(status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 1);
    EXPECT_NE(h.stderr_text().find("httpd: cannot listen on " + spec + ": Address already in use"),
              std::string::npos) << h.stderr_text();
}

TEST(HttpdProgram, HelpAndVersion) {
    NEED_HTTPD();
    std::string httpd = (test_launcher().empty() ? "" : test_launcher() + " ") + httpd_path();
    EXPECT_NE(run(httpd + " --help").find("--max-requests-per-child"), std::string::npos);
    EXPECT_NE(run(httpd + " --version").find("httpd (prefork)"), std::string::npos);
}

TEST(HttpdProgram, ServesADocrootWithAccessLogAndPidFile) {
    NEED_HTTPD();
    char dir[] = "/tmp/prefork-www-XXXXXX";
    std::string www = mkdtemp(dir);
    chmod(www.c_str(), 0755);
    { std::ofstream(www + "/hello.txt") << "hello, world!\n"; }
    Httpd h({"--listen", "unix:@/s.sock", "--access-log", "@/access.log", "--pid-file", "@/httpd.pid",
             "--start-servers", "2", www});
    ASSERT_TRUE(h.ready()) << h.stderr_text();
    // The socket is bound before the pid file is written: wait for it.
    EXPECT_TRUE(eventually([&] { return slurp(h.scratch() + "/httpd.pid") == std::to_string(h.pid()) + "\n"; }))
        << slurp(h.scratch() + "/httpd.pid");
    Client c(h.address());
    ASSERT_TRUE(c.send("GET /hello.txt HTTP/1.1\r\nHost: x\r\nUser-Agent: raw\r\n\r\n"));
    EXPECT_EQ(c.line(), "HTTP/1.1 200 OK\r");
    if (system("command -v curl >/dev/null 2>&1") == 0) {
        std::string curl = "curl -s --unix-socket " + h.scratch() + "/s.sock ";
        EXPECT_EQ(run(curl + "http://x/hello.txt"), "hello, world!\n");
        EXPECT_EQ(run(curl + "-o /dev/null -w '%{http_code}' http://x/missing"), "404");
        EXPECT_EQ(run(curl + "-o /dev/null -w '%{http_code}' -r 0-4 http://x/hello.txt"), "206");
        EXPECT_EQ(run(curl + "-I -o /dev/null -w '%{http_code} %{size_download}' http://x/hello.txt"), "200 0");
        EXPECT_EQ(run(curl + "-o /dev/null -w '%{http_code}' -X DELETE http://x/hello.txt"), "405");
        EXPECT_EQ(run(curl + "-o /dev/null -o /dev/null -w '%{num_connects}' http://x/hello.txt http://x/hello.txt"), "10")
            << "curl reused its connection: keep-alive";
        std::string automatic = run(curl + "http://x/server-status?auto");
        EXPECT_NE(automatic.find("ServerMPM: prefork"), std::string::npos);
        // Product/X.Y.Z, as Apache's: apache_exporter panics on anything else.
        EXPECT_NE(automatic.find("\nServerVersion: prefork-httpd/0.1.0\n"), std::string::npos) << automatic;
    }
    ASSERT_EQ(kill(h.pid(), SIGTERM), 0);
    int status = h.wait(5000);
    EXPECT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << h.stderr_text();
    EXPECT_NE(access((h.scratch() + "/httpd.pid").c_str(), F_OK), 0) << "pid file left behind";
    std::string log = slurp(h.scratch() + "/access.log");
    EXPECT_NE(log.find("] \"GET /hello.txt HTTP/1.1\" 200 14 \"-\" \"raw\"\n"), std::string::npos) << log;
    EXPECT_EQ(log.compare(0, 7, "unix - "), 0) << log;
    unlink((www + "/hello.txt").c_str());
    rmdir(www.c_str());
}

TEST(HttpdProgram, StatusPathCanBeMovedOrTurnedOff) {
    NEED_HTTPD();
    Httpd moved({"--listen", "unix:@/s.sock", "--status-path", "/st", "@"});
    ASSERT_TRUE(moved.ready()) << moved.stderr_text();
    Client a(moved.address());
    ASSERT_TRUE(a.send("GET /st?auto HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(a.line(), "HTTP/1.1 200 OK\r");
    Httpd off({"--listen", "unix:@/s.sock", "--status-path", "off", "@"});
    ASSERT_TRUE(off.ready()) << off.stderr_text();
    Client b(off.address());
    ASSERT_TRUE(b.send("GET /server-status HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(b.line(), "HTTP/1.1 404 Not Found\r");
}

TEST(HttpdProgram, UserDropsPrivilegesAfterBinding) {
    NEED_HTTPD();
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    Httpd h({"--listen", "unix:@/s.sock", "--user", "nobody", "--start-servers", "2", "@"});
    ASSERT_TRUE(h.ready()) << h.stderr_text();
    // The socket answers before the workers exist: wait for one.
    std::string children_file = "/proc/" + std::to_string(h.pid()) + "/task/" + std::to_string(h.pid()) + "/children";
    pid_t worker = -1;
    ASSERT_TRUE(eventually([&] {
        std::istringstream pids(slurp(children_file));
        return bool(pids >> worker);
    })) << "no worker";
    // Parent and worker: nobody's uid and gid, real, effective, saved and
    // filesystem, and nobody's supplementary groups only.
    struct passwd *nobody = getpwnam("nobody");
    ASSERT_NE(nobody, nullptr);
    gid_t groups[64];
    int count = 64;
    ASSERT_GE(getgrouplist("nobody", nobody->pw_gid, groups, &count), 0);
    std::vector<gid_t> expected(groups, groups + count);
    std::sort(expected.begin(), expected.end());
    expected.erase(std::unique(expected.begin(), expected.end()), expected.end());
    for (pid_t pid : {h.pid(), worker}) {
        std::string status = slurp("/proc/" + std::to_string(pid) + "/status");
        std::string uid = std::to_string(nobody->pw_uid), gid = std::to_string(nobody->pw_gid);
        EXPECT_NE(status.find("\nUid:\t" + uid + "\t" + uid + "\t" + uid + "\t" + uid + "\n"), std::string::npos)
            << pid << status;
        EXPECT_NE(status.find("\nGid:\t" + gid + "\t" + gid + "\t" + gid + "\t" + gid + "\n"), std::string::npos)
            << pid << status;
        size_t at = status.find("\nGroups:");
        ASSERT_NE(at, std::string::npos);
        std::istringstream listed(status.substr(at + 8, status.find('\n', at + 1) - at - 8));
        std::vector<gid_t> seen;
        for (gid_t g; listed >> g;) seen.push_back(g);
        std::sort(seen.begin(), seen.end());
        EXPECT_EQ(seen, expected) << pid << status;
    }
    Client c(h.address());  // and it still serves, as nobody
    ASSERT_TRUE(c.send("GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(c.line(), "HTTP/1.1 404 Not Found\r");
}

// Root without --user runs as www-data (else nobody), says so, and warns
// when that user cannot read the docroot; --user root still insists.
TEST(HttpdProgram, RootWithoutUserRunsAsWwwDataOrNobody) {
    NEED_HTTPD();
    if (geteuid() != 0) GTEST_SKIP() << "needs root";
    const passwd *account = getpwnam("www-data");
    if (!account) account = getpwnam("nobody");
    ASSERT_NE(account, nullptr);
    std::string name = account->pw_name;
    uid_t uid = account->pw_uid;
    Httpd h({"--listen", "unix:@/s.sock", "--pid-file", "@/httpd.pid", "@"}, false);
    ASSERT_TRUE(h.running()) << h.stderr_text();
    EXPECT_TRUE(h.wait_log("started as root without --user: running as " + name, 1)) << h.stderr_text();
    EXPECT_EQ(h.stderr_text().find("cannot read the docroot"), std::string::npos) << h.stderr_text();
    std::string status = slurp("/proc/" + std::to_string(h.pid()) + "/status");
    std::string uids = status.substr(status.find("Uid:"), status.find('\n', status.find("Uid:")) - status.find("Uid:"));
    std::string u = std::to_string(uid);
    EXPECT_EQ(uids, "Uid:\t" + u + "\t" + u + "\t" + u + "\t" + u) << status;
    Client c(h.address());
    ASSERT_TRUE(c.send("GET /missing HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(c.line(), "HTTP/1.1 404 Not Found\r");

    char dir[] = "/tmp/prefork-private-XXXXXX";
    std::string private_root = mkdtemp(dir);
    chmod(private_root.c_str(), 0700);
    Httpd hidden({"--listen", "unix:@/s.sock", private_root}, false);
    ASSERT_TRUE(hidden.running()) << hidden.stderr_text();
    EXPECT_TRUE(hidden.wait_log(name + " cannot read the docroot " + private_root + ": Permission denied", 1))
        << hidden.stderr_text();
    rmdir(private_root.c_str());
}

// systemd socket activation: a listening socket passed as fd 3 with
// LISTEN_FDS=1 and LISTEN_PID set to httpd's pid is served, with no
// --listen (and no default port bound).
TEST(HttpdProgram, ServesASocketPassedBySystemd) {
    NEED_HTTPD();
    char dir[] = "/tmp/prefork-activation-XXXXXX";
    std::string where = mkdtemp(dir);
    std::string path = where + "/passed.sock";
    int listener = socket(AF_UNIX, SOCK_STREAM, 0);
    ASSERT_GE(listener, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr *>(&address), sizeof address), 0);
    ASSERT_EQ(listen(listener, 16), 0);
    Httpd h({"--start-servers", "2", "@"}, true, [listener] {
        dup2(listener, 3);  // the first passed fd, as systemd does it
        setenv("LISTEN_FDS", "1", 1);
        setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);  // exec keeps the pid
    });
    close(listener);
    Client c("unix:" + path);
    ASSERT_TRUE(c.connected());
    ASSERT_TRUE(c.send("GET /nothing-here HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(c.line(), "HTTP/1.1 404 Not Found\r") << h.stderr_text();
    EXPECT_EQ(h.stderr_text().find("8080"), std::string::npos) << "it bound the default port too";
    unlink(path.c_str());
    rmdir(where.c_str());
}

TEST(HttpdProgram, MalformedActivationVariablesAreExit2) {
    NEED_HTTPD();
    Httpd h({"--listen", "unix:@/s.sock", "@"}, true, [] {
        setenv("LISTEN_FDS", "many", 1);
        setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
    });
    int status = h.wait(5000);
    ASSERT_GE(status, 0);
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2);
    EXPECT_EQ(h.stderr_text(), "httpd: malformed LISTEN_PID/LISTEN_FDS in the environment\n");
}

// A pid file left by a server that died (its pid is gone) does not stop the
// next start, which replaces it (written to a temporary name, then renamed).
TEST(HttpdProgram, AStalePidFileIsReplaced) {
    NEED_HTTPD();
    pid_t dead = fork();
    if (dead == 0) _exit(0);
    ASSERT_GT(dead, 0);
    waitpid(dead, nullptr, 0);
    char dir[] = "/tmp/prefork-pidfile-XXXXXX";
    std::string where = mkdtemp(dir);
    std::string pid_file = where + "/httpd.pid";
    {
        std::ofstream stale(pid_file);
        stale << dead << "\n";
    }
    Httpd h({"--listen", "unix:@/s.sock", "--pid-file", pid_file, "@"});
    ASSERT_TRUE(h.ready()) << h.stderr_text();
    EXPECT_TRUE(eventually([&] { return slurp(pid_file) == std::to_string(h.pid()) + "\n"; })) << slurp(pid_file);
    // SIGTERM once the pool runs (its handlers are in place by then).
    std::string children = "/proc/" + std::to_string(h.pid()) + "/task/" + std::to_string(h.pid()) + "/children";
    ASSERT_TRUE(eventually([&] { return !slurp(children).empty(); })) << "no worker";
    EXPECT_EQ(h.wait(0), -1) << "it exited: " << h.stderr_text();
    kill(h.pid(), SIGTERM);
    EXPECT_GE(h.wait(5000), 0);
    EXPECT_NE(access(pid_file.c_str(), F_OK), 0) << "the pid file outlived the server";
    rmdir(where.c_str());
}

// systemd's NOTIFY_SOCKET: READY=1 once workers serve, RELOADING=1 then
// READY=1 around a graceful restart, STOPPING=1 at a stop, STATUS= lines
// with the counts; each a datagram written by hand.
TEST(HttpdProgram, TellsSystemdWhenReadyReloadingAndStopping) {
    NEED_HTTPD();
    char dir[] = "/tmp/prefork-notify-XXXXXX";
    std::string where = mkdtemp(dir);
    std::string path = where + "/notify.sock";
    int listener = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    ASSERT_GE(listener, 0);
    sockaddr_un address{};
    address.sun_family = AF_UNIX;
    snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
    ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr *>(&address), sizeof address), 0);
    std::vector<std::string> said;
    // Reads datagrams until one contains `token` (true) or 5 s pass.
    auto hear = [&](const std::string &token) {
        int64_t deadline = harness::now_ms() + 5000;
        while (harness::now_ms() < deadline) {
            pollfd p = {listener, POLLIN, 0};
            if (poll(&p, 1, 50) <= 0) continue;
            char buffer[512];
            ssize_t n = recv(listener, buffer, sizeof buffer, 0);
            if (n <= 0) continue;
            said.emplace_back(buffer, size_t(n));
            if (said.back().find(token) != std::string::npos) return true;
        }
        return false;
    };
    Httpd h({"--listen", "unix:@/s.sock", "--start-servers", "2", "@"}, true,
            [path] { setenv("NOTIFY_SOCKET", path.c_str(), 1); });
    EXPECT_TRUE(hear("READY=1")) << h.stderr_text();
    ASSERT_FALSE(said.empty());
    EXPECT_NE(said.back().find("\nSTATUS="), std::string::npos) << said.back();
    EXPECT_TRUE(h.ready());
    kill(h.pid(), SIGHUP);
    EXPECT_TRUE(hear("RELOADING=1"));
    EXPECT_NE(said.back().find("MONOTONIC_USEC="), std::string::npos) << said.back();
    EXPECT_TRUE(hear("READY=1")) << "no READY=1 after the restart";
    kill(h.pid(), SIGTERM);
    EXPECT_TRUE(hear("STOPPING=1"));
    EXPECT_GE(h.wait(5000), 0);
    close(listener);
    unlink(path.c_str());
    rmdir(where.c_str());
}

// SIGUSR1 (logrotate): after the logs are renamed away, httpd opens them
// again by name; requests and log lines go to the new files.
TEST(HttpdProgram, Sigusr1ReopensTheLogs) {
    NEED_HTTPD();
    Httpd h({"--listen", "unix:@/s.sock", "--access-log", "@/access.log", "--error-log", "@/error.log",
             "--start-servers", "2", "@"});
    ASSERT_TRUE(h.ready()) << h.stderr_text();
    auto ask = [&](const std::string &path) {
        Client c(h.address());
        c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        std::string all;
        c.until_eof(&all, 3000);
    };
    ask("/before-rotation");
    std::string dir = h.scratch();
    ASSERT_TRUE(eventually([&] { return slurp(dir + "/access.log").find("/before-rotation") != std::string::npos; }));
    ASSERT_EQ(rename((dir + "/access.log").c_str(), (dir + "/access.log.1").c_str()), 0);
    ASSERT_EQ(rename((dir + "/error.log").c_str(), (dir + "/error.log.1").c_str()), 0);
    kill(h.pid(), SIGUSR1);
    ASSERT_TRUE(eventually([&] { return access((dir + "/access.log").c_str(), F_OK) == 0; })) << "not reopened";
    // Old workers go (graceful restart); soon every answer is logged anew.
    EXPECT_TRUE(eventually([&] {
        ask("/after-rotation");
        return slurp(dir + "/access.log").find("/after-rotation") != std::string::npos;
    }));
    EXPECT_NE(slurp(dir + "/access.log.1").find("/before-rotation"), std::string::npos);
    EXPECT_NE(slurp(dir + "/error.log").find("logs reopened"), std::string::npos) << slurp(dir + "/error.log");
}

// ---- binary upgrade (SIGUSR2) ---------------------------------------------

namespace {

// Writes the httpd under test to path as a new file (a new inode, as an
// install does: the running binary is never written over).
bool install_httpd(const std::string &path) {
    std::string bytes = slurp(httpd_path());
    std::string temporary = path + ".new";
    {
        std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
        out << bytes;
        if (bytes.empty() || !out) return false;
    }
    return chmod(temporary.c_str(), 0755) == 0 && rename(temporary.c_str(), path.c_str()) == 0;
}

// A directory of its own holding a copy of the httpd under test, for a
// test to run and install new programs over; removed with everything in it.
struct BinaryCopy {
    BinaryCopy() {
        char dir[] = "/tmp/prefork-upgrade-XXXXXX";
        if (!mkdtemp(dir)) return;
        where = dir;
        binary = where + "/httpd";
        chmod(where.c_str(), 0755);
        installed = install_httpd(binary);
    }
    ~BinaryCopy() {
        if (where.empty()) return;
        std::string rm = "rm -rf " + where;
        if (system(rm.c_str()) != 0) {}
    }
    bool ok() const { return installed; }
    std::string where, binary;
    bool installed = false;
};

bool install_script(const std::string &path, const std::string &body, mode_t mode = 0755) {
    std::string temporary = path + ".new";
    {
        std::ofstream out(temporary, std::ios::trunc);
        out << body;
        if (!out) return false;
    }
    return chmod(temporary.c_str(), mode) == 0 && rename(temporary.c_str(), path.c_str()) == 0;
}

// While it lives, orphans of our children (a new parent once the old one
// has exited) become ours to reap; at the end it reaps what is left.
struct Subreaper {
    Subreaper() { prctl(PR_SET_CHILD_SUBREAPER, 1); }
    ~Subreaper() {
        prctl(PR_SET_CHILD_SUBREAPER, 0);
        eventually([] { return waitpid(-1, nullptr, WNOHANG) <= 0; }, 2000);
    }
};

// A listening TCP socket on 127.0.0.1 with a port the kernel picked.
int tcp_listener(int *port) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (fd < 0 || bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0 ||
        listen(fd, 128) != 0 || getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length) != 0)
        return -1;
    *port = ntohs(address.sin_port);
    return fd;
}

// Requests without pause from two threads, until stopped (or 60 s, or a
// million requests): one opens a connection per request, the other keeps
// its connection for up to 100 requests. A request that is sent and gets
// no whole 200 answer is a failure, except that a kept connection the
// server closed before a request arrived is retried on a new one, as HTTP
// clients do (RFC 9112 section 9.3.1): a worker that drains closes a kept
// connection left idle for 200 ms, and this thread may be descheduled.
class Load {
public:
    Load(const std::string &close_address, const std::string &keepalive_address) {
        threads_.emplace_back([this, close_address] { run(close_address, false); });
        threads_.emplace_back([this, keepalive_address] { run(keepalive_address, true); });
    }
    ~Load() { stop(); }
    void stop() {
        stop_ = true;
        for (std::thread &t : threads_)
            if (t.joinable()) t.join();
    }
    long ok() const { return ok_; }
    long failed() const { return failed_; }
    long retried() const { return retried_; }
    std::string first_failure() {
        std::lock_guard<std::mutex> lock(mutex_);
        return first_failure_;
    }

private:
    void fail(const std::string &why) {
        if (failed_++ == 0) {
            std::lock_guard<std::mutex> lock(mutex_);
            first_failure_ = why;
        }
    }
    // One request on c; false when the connection cannot be used again.
    bool request(Client &c, bool keep, bool reused) {
        if (!c.send(std::string("GET /index.html HTTP/1.1\r\nHost: x\r\n") +
                    (keep ? "" : "Connection: close\r\n") + "\r\n")) {
            if (reused) retried_++;
            else fail("send failed");
            return false;
        }
        int64_t sent = harness::now_ms();
        std::string status = c.line(5000), header;
        if (status.empty() && reused && harness::now_ms() - sent < 4000) {
            retried_++;  // closed without a byte of answer: not timed out
            return false;
        }
        size_t length = 0;
        bool closing = !keep;
        while (!(header = c.line(5000)).empty() && header != "\r") {
            if (header.compare(0, 16, "Content-Length: ") == 0) length = size_t(atol(header.c_str() + 16));
            if (header == "Connection: close\r") closing = true;
        }
        if (status != "HTTP/1.1 200 OK\r" || header != "\r" || c.bytes(length).size() != length) {
            fail("answer: '" + status + "'");
            return false;
        }
        ok_++;
        return !closing;
    }
    void run(const std::string &address, bool keep) {
        int64_t until = harness::now_ms() + 60000;
        while (!stop_ && harness::now_ms() < until && ok_ + failed_ < 1000000) {
            Client c(address);
            if (!c.connected()) {
                fail("connect failed: " + std::string(strerror(errno)));
                continue;
            }
            for (int i = 0; i < 100 && !stop_ && request(c, keep, i > 0); i++) {}
        }
    }
    std::atomic<bool> stop_{false};
    std::atomic<long> ok_{0}, failed_{0}, retried_{0};
    std::mutex mutex_;
    std::string first_failure_;
    std::vector<std::thread> threads_;
};

std::string link_target(const std::string &path) {
    char buffer[4096];
    ssize_t n = readlink(path.c_str(), buffer, sizeof buffer);
    return n > 0 ? std::string(buffer, size_t(n)) : "";
}

pid_t pid_in(const std::string &pid_file) { return pid_t(atol(slurp(pid_file).c_str())); }

// A NOTIFY_SOCKET that records each datagram with its sender's pid
// (SO_PASSCRED), as systemd sees them.
class NotifySocket {
public:
    NotifySocket() {
        char dir[] = "/tmp/prefork-notify-XXXXXX";
        where_ = mkdtemp(dir);
        path_ = where_ + "/notify.sock";
        fd_ = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        snprintf(address.sun_path, sizeof address.sun_path, "%s", path_.c_str());
        int one = 1;
        if (fd_ < 0 || bind(fd_, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0 ||
            setsockopt(fd_, SOL_SOCKET, SO_PASSCRED, &one, sizeof one) != 0)
            fd_ = -1;
    }
    ~NotifySocket() {
        if (fd_ >= 0) close(fd_);
        unlink(path_.c_str());
        rmdir(where_.c_str());
    }
    bool ok() const { return fd_ >= 0; }
    const std::string &path() const { return path_; }
    // Reads what has arrived within timeout_ms; true once a datagram
    // contains token.
    bool hear(const std::string &token, int timeout_ms = 5000) {
        int64_t deadline = harness::now_ms() + timeout_ms;
        do {
            pollfd p = {fd_, POLLIN, 0};
            if (poll(&p, 1, 20) <= 0) continue;
            char buffer[512], control[CMSG_SPACE(sizeof(ucred))];
            iovec piece = {buffer, sizeof buffer};
            msghdr message{};
            message.msg_iov = &piece;
            message.msg_iovlen = 1;
            message.msg_control = control;
            message.msg_controllen = sizeof control;
            ssize_t n = recvmsg(fd_, &message, 0);
            if (n <= 0) continue;
            pid_t sender = 0;
            for (cmsghdr *c = CMSG_FIRSTHDR(&message); c; c = CMSG_NXTHDR(&message, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS)
                    sender = reinterpret_cast<ucred *>(CMSG_DATA(c))->pid;
            heard.emplace_back(sender, std::string(buffer, size_t(n)));
            if (heard.back().second.find(token) != std::string::npos) return true;
        } while (harness::now_ms() < deadline);
        return false;
    }
    std::vector<std::pair<pid_t, std::string>> heard;

private:
    int fd_ = -1;
    std::string where_, path_;
};

}  // namespace

#define NEED_NATIVE_EXEC()                                                                  \
    if (!test_launcher().empty())                                                           \
        GTEST_SKIP() << "under " << test_launcher() << ", httpd could not exec a binary of " \
                        "another architecture itself (that needs binfmt_misc)"

// SIGUSR2 under load from two clients: the parent runs the binary now at its
// path (a new file), hands it both listeners (a TCP socket passed as
// systemd would, also named by --listen, and a UNIX socket it bound), and
// once the new pool is up drains and exits. Not one request fails; the pid
// file names the new parent; the socket file outlives the old parent and
// goes with the new one.
TEST(HttpdUpgrade, Sigusr2RunsTheNewBinaryWithoutLosingARequest) {
    NEED_HTTPD();
    NEED_NATIVE_EXEC();
    Subreaper subreaper;
    BinaryCopy copy;
    ASSERT_TRUE(copy.ok());
    const std::string &binary = copy.binary;
    int port = 0, tcp = tcp_listener(&port);
    ASSERT_GE(tcp, 0);
    std::string tcp_address = "127.0.0.1:" + std::to_string(port);
    NotifySocket systemd;
    ASSERT_TRUE(systemd.ok());
    std::string notify_path = systemd.path();
    Httpd h({"--listen", tcp_address, "--listen", "unix:@/s.sock", "--pid-file", "@/httpd.pid",
             "--start-servers", "3", "@"},
            true,
            [tcp, notify_path] {
                if (tcp == 3) fcntl(3, F_SETFD, 0);  // dup2 onto itself keeps close-on-exec
                else dup2(tcp, 3);
                setenv("LISTEN_FDS", "1", 1);
                setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
                setenv("NOTIFY_SOCKET", notify_path.c_str(), 1);
            },
            binary);
    close(tcp);
    ASSERT_TRUE(h.ready()) << h.stderr_text();
    ASSERT_TRUE(systemd.hear("READY=1")) << h.stderr_text();
    std::string pid_file = h.scratch() + "/httpd.pid", socket_file = h.scratch() + "/s.sock";
    ASSERT_TRUE(eventually([&] { return pid_in(pid_file) == h.pid(); })) << h.stderr_text();
    {
        std::ofstream page(h.scratch() + "/index.html");
        page << "the same page from either binary\n";
    }

    Load load(tcp_address, h.address());
    ASSERT_TRUE(eventually([&] { return load.ok() >= 1000; })) << load.first_failure();
    ASSERT_TRUE(install_httpd(binary));  // the "new release"
    ASSERT_EQ(kill(h.pid(), SIGUSR2), 0);
    ASSERT_TRUE(eventually([&] { return pid_in(pid_file) > 0 && pid_in(pid_file) != h.pid(); }, 10000))
        << h.stderr_text();
    pid_t fresh = pid_in(pid_file);
    int status = h.wait(10000);
    ASSERT_GE(status, 0) << "the old parent did not exit: " << h.stderr_text();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    EXPECT_EQ(pid_in(pid_file), fresh) << "the old parent took the new one's pid file with it";
    EXPECT_EQ(link_target("/proc/" + std::to_string(fresh) + "/exe"), binary) << "not the new file";
    // systemd hears from the old parent: RELOADING=1, then MAINPID= the new
    // one with READY=1, and nothing after that (no STOPPING=1: the service
    // goes on). The new parent says nothing before that: it waits for the
    // old parent's 'A', sent just before MAINPID=, and a second more.
    EXPECT_TRUE(systemd.hear("MAINPID=" + std::to_string(fresh) + "\nREADY=1"));
    systemd.hear("no more", 300);
    bool reloading = false, handed_over = false;
    for (const auto &said : systemd.heard) {
        SCOPED_TRACE(std::to_string(said.first) + ": " + said.second);
        reloading |= said.second.find("RELOADING=1") != std::string::npos;
        if (said.first == h.pid()) {
            EXPECT_FALSE(handed_over) << "the old parent spoke after the handover";
        } else if (said.first == fresh) {
            EXPECT_TRUE(handed_over) << "the new parent spoke before the handover";
        }
        handed_over |= said.second.find("MAINPID=") != std::string::npos;
    }
    EXPECT_TRUE(reloading);
    long at_handover = load.ok();
    EXPECT_TRUE(eventually([&] { return load.ok() >= at_handover + 1000; })) << load.first_failure() << h.stderr_text();
    load.stop();
    EXPECT_EQ(load.failed(), 0) << load.first_failure();
    // A retry needs an old worker that closed its kept connection while
    // draining: at most one per old worker (max spare 10).
    EXPECT_LE(load.retried(), 10);
    std::string log = h.stderr_text();
    EXPECT_NE(log.find("upgrade: new parent " + std::to_string(fresh) + " is ready"), std::string::npos) << log;
    printf("      %ld requests, %ld failed, %ld retried on a new connection across the upgrade\n",
           load.ok(), load.failed(), load.retried());
    struct stat st;
    EXPECT_EQ(stat(socket_file.c_str(), &st), 0) << "the old parent removed the new one's socket";

    ASSERT_EQ(kill(fresh, SIGTERM), 0);
    ASSERT_TRUE(eventually([&] { return waitpid(fresh, &status, WNOHANG) == fresh; }, 10000))
        << h.stderr_text();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
    EXPECT_NE(access(pid_file.c_str(), F_OK), 0) << "the new parent left its pid file";
    EXPECT_NE(stat(socket_file.c_str(), &st), 0) << "the new parent left its socket file";
}

// A new binary that exits at once, one that cannot be executed, and an
// httpd that cannot write its pid file: each time the old parent logs why,
// stops what it started, keeps its pid file and socket, and goes on
// serving. Then a good binary still takes over.
TEST(HttpdUpgrade, AFailedUpgradeLeavesTheOldParentServing) {
    NEED_HTTPD();
    NEED_NATIVE_EXEC();
    Subreaper subreaper;
    BinaryCopy copy;
    ASSERT_TRUE(copy.ok());
    const std::string &binary = copy.binary;
    Httpd h({"--listen", "unix:@/s.sock", "--pid-file", "@/httpd.pid", "--start-servers", "2", "@"},
            true, nullptr, binary);
    ASSERT_TRUE(h.running()) << h.stderr_text();
    std::string pid_file = h.scratch() + "/httpd.pid";
    ASSERT_TRUE(eventually([&] { return pid_in(pid_file) == h.pid(); })) << h.stderr_text();
    auto serves = [&] {
        Client c(h.address());
        std::string all;
        return c.send("GET /nothing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") &&
               c.until_eof(&all, 3000) && all.compare(0, 22, "HTTP/1.1 404 Not Found") == 0;
    };
    struct Case { const char *what, *body; mode_t mode; const char *logged; };
    const Case cases[] = {
        {"exits at once", "#!/bin/sh\nexit 3\n", 0755, "ended before it was ready"},
        {"cannot be executed", "not a program\n", 0644, ": Permission denied; still serving"},
    };
    int failures = 0;
    for (const Case &c : cases) {
        SCOPED_TRACE(c.what);
        ASSERT_TRUE(install_script(binary, c.body, c.mode));
        ASSERT_EQ(kill(h.pid(), SIGUSR2), 0);
        failures++;
        EXPECT_TRUE(h.wait_log("upgrade failed: ", failures)) << h.stderr_text();
        EXPECT_NE(h.stderr_text().find(c.logged), std::string::npos) << h.stderr_text();
        // Whatever was started is gone again (reaped: the old parent logs it).
        EXPECT_TRUE(h.wait_log("upgrade: new parent", failures)) << h.stderr_text();
        EXPECT_EQ(h.wait(0), -1) << "the old parent exited";
        EXPECT_EQ(pid_in(pid_file), h.pid());
        EXPECT_TRUE(serves());
    }
    // A real httpd that starts its pool but cannot write the pid file (a
    // directory now holds its name): its ready hook fails, it stops, and
    // the old parent's socket file stays.
    ASSERT_TRUE(install_httpd(binary));
    ASSERT_EQ(unlink(pid_file.c_str()), 0);
    ASSERT_EQ(mkdir(pid_file.c_str(), 0755), 0);
    install_script(pid_file + "/keep", "");
    ASSERT_EQ(kill(h.pid(), SIGUSR2), 0);
    EXPECT_TRUE(h.wait_log("upgrade failed: ", failures + 1)) << h.stderr_text();
    EXPECT_NE(h.stderr_text().find("cannot write the pid file"), std::string::npos) << h.stderr_text();
    EXPECT_TRUE(h.wait_log("upgrade: new parent", failures + 1)) << h.stderr_text();
    EXPECT_EQ(h.wait(0), -1) << "the old parent exited";
    EXPECT_TRUE(serves()) << "the new parent took the socket file with it";
    unlink((pid_file + "/keep").c_str());
    ASSERT_EQ(rmdir(pid_file.c_str()), 0);

    ASSERT_EQ(kill(h.pid(), SIGUSR2), 0);
    int status = h.wait(10000);
    EXPECT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << h.stderr_text();
    pid_t fresh = pid_in(pid_file);
    EXPECT_NE(fresh, h.pid());
    EXPECT_TRUE(serves());
    if (fresh > 0 && fresh != h.pid()) {
        kill(fresh, SIGTERM);
        EXPECT_TRUE(eventually([&] { return waitpid(fresh, nullptr, WNOHANG) == fresh; }, 10000));
    }
}

// A new program that never gets ready is stopped at --upgrade-timeout.
TEST(HttpdUpgrade, ANewProgramThatNeverGetsReadyIsStoppedAtTheTimeout) {
    NEED_HTTPD();
    NEED_NATIVE_EXEC();
    BinaryCopy copy;
    ASSERT_TRUE(copy.ok());
    const std::string &binary = copy.binary;
    Httpd h({"--listen", "unix:@/s.sock", "--start-servers", "2", "--upgrade-timeout", "1", "@"}, true,
            nullptr, binary);
    ASSERT_TRUE(h.running()) << h.stderr_text();
    ASSERT_TRUE(install_script(binary, "#!/bin/sh\nexec sleep 30\n"));
    int64_t sent = harness::now_ms();
    ASSERT_EQ(kill(h.pid(), SIGUSR2), 0);
    EXPECT_TRUE(h.wait_log("was not ready after 1 s; still serving", 1)) << h.stderr_text();
    EXPECT_GE(harness::now_ms() - sent, 1000);
    EXPECT_TRUE(h.wait_log("was killed by signal 15", 1)) << h.stderr_text();
    EXPECT_EQ(h.wait(0), -1) << "the old parent exited";
    EXPECT_TRUE(h.ready());
}

// The handover itself, with this test as the old parent: httpd started the
// way an upgrade starts it (a UNIX socket whose file the old parent made,
// "owned", and the socket for 'R' and 'A') writes its pid file and says
// 'R'. If the old parent then gives up, httpd does not take the socket
// file, and when stopped gives the pid file back to its parent; if the
// old parent answers 'A', both are httpd's to remove.
TEST(HttpdUpgrade, TheNewParentTakesOverOnlyWhenTheOldOneSaysSo) {
    NEED_HTTPD();
    for (bool acknowledged : {false, true}) {
        SCOPED_TRACE(acknowledged ? "the old parent answers 'A'" : "the old parent gives up");
        char dir[] = "/tmp/prefork-handover-XXXXXX";
        std::string where = mkdtemp(dir);
        chmod(where.c_str(), 0755);
        std::string path = where + "/s.sock", pid_file = where + "/httpd.pid";
        int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        ASSERT_GE(listener, 0);
        sockaddr_un address{};
        address.sun_family = AF_UNIX;
        snprintf(address.sun_path, sizeof address.sun_path, "%s", path.c_str());
        ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr *>(&address), sizeof address), 0);
        ASSERT_EQ(listen(listener, 16), 0);
        int pair[2];
        ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair), 0);
        Httpd h({"--listen", "unix:" + path, "--pid-file", pid_file, "--start-servers", "2", where}, true,
                [listener, pair] {
                    int high_listener = fcntl(listener, F_DUPFD, 10), high_pair = fcntl(pair[1], F_DUPFD, 10);
                    dup2(high_listener, 3);
                    dup2(high_pair, 4);
                    setenv("LISTEN_FDS", "1", 1);
                    setenv("LISTEN_PID", std::to_string(getpid()).c_str(), 1);
                    setenv("LISTEN_FDNAMES", "owned", 1);
                    setenv("PREFORK_UPGRADE_FD", "4", 1);
                });
        close(listener);
        close(pair[1]);
        pollfd p = {pair[0], POLLIN, 0};
        char word = 0;
        ASSERT_EQ(poll(&p, 1, 5000), 1) << h.stderr_text();
        ASSERT_EQ(read(pair[0], &word, 1), 1);
        EXPECT_EQ(word, 'R');
        EXPECT_EQ(pid_in(pid_file), h.pid()) << "no pid file before 'R'";
        if (acknowledged) {
            ASSERT_EQ(write(pair[0], "A", 1), 1);
            EXPECT_TRUE(h.wait_log("upgrade: taken over", 1)) << h.stderr_text();
        }
        close(pair[0]);
        if (!acknowledged) {
            EXPECT_TRUE(h.wait_log("the old parent gave up", 1)) << h.stderr_text();
        }
        EXPECT_TRUE(Client("unix:" + path).connected());
        ASSERT_EQ(kill(h.pid(), SIGTERM), 0);
        int status = h.wait(10000);
        EXPECT_TRUE(status >= 0 && WIFEXITED(status)) << h.stderr_text();
        struct stat st;
        if (acknowledged) {
            EXPECT_NE(access(pid_file.c_str(), F_OK), 0) << "the pid file outlived the server";
            EXPECT_NE(stat(path.c_str(), &st), 0) << "the socket file it took over outlived it";
        } else {
            EXPECT_EQ(pid_in(pid_file), getpid()) << "the pid file was not given back";
            EXPECT_EQ(stat(path.c_str(), &st), 0) << "it removed a socket file it never took over";
        }
        std::string rm = "rm -rf " + where;
        if (system(rm.c_str()) != 0) {}
    }
}

// Basic auth end to end (issue 13): a password file made by htpasswd at
// test time, curl with and without -u, the log lines, and an edit of the
// file seen by the running server.
TEST(HttpdAuth, AProtectedPrefixWantsAPasswordFromTheFile) {
    NEED_HTTPD();
    if (system("command -v curl >/dev/null 2>&1 && command -v htpasswd >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "needs curl and htpasswd (Debian: curl apache2-utils)";
    char dir[] = "/tmp/prefork-www-XXXXXX";
    std::string www = mkdtemp(dir);
    chmod(www.c_str(), 0755);
    mkdir((www + "/private").c_str(), 0755);
    { std::ofstream(www + "/private/secret.txt") << "the secret\n"; }
    { std::ofstream(www + "/public.txt") << "for all\n"; }
    std::string passwords = www + "/.htpasswd";  // a dotfile: never served
    ASSERT_EQ(system(("htpasswd -cbB -C 4 " + passwords + " alice 'alice pass' 2>/dev/null").c_str()), 0);
    ASSERT_EQ(system(("htpasswd -bm " + passwords + " bob bobpw 2>/dev/null").c_str()), 0);
    Httpd h({"--listen", "unix:@/s.sock", "--access-log", "@/access.log", "--auth", "/private/=" + passwords,
             "--auth-realm", "Test Realm", www});
    ASSERT_TRUE(h.ready()) << h.stderr_text();
    std::string curl = "curl -s --unix-socket " + h.scratch() + "/s.sock -o /dev/null -w '%{http_code}' ";
    EXPECT_EQ(run(curl + "http://x/public.txt"), "200");
    EXPECT_EQ(run(curl + "http://x/private/secret.txt"), "401");
    std::string head = run("curl -s -i --unix-socket " + h.scratch() + "/s.sock http://x/private/secret.txt");
    EXPECT_NE(head.find("WWW-Authenticate: Basic realm=\"Test Realm\""), std::string::npos) << head;
    EXPECT_EQ(run(curl + "-u 'alice:alice pass' http://x/private/secret.txt"), "200");
    EXPECT_EQ(run(curl + "-u bob:bobpw http://x/private/secret.txt"), "200");
    EXPECT_EQ(run(curl + "-u alice:Zebra-Guess-42 http://x/private/secret.txt"), "401");
    EXPECT_EQ(run(curl + "-u mallory:x http://x/private/secret.txt"), "401");
    EXPECT_EQ(run("curl -s --unix-socket " + h.scratch() + "/s.sock -u 'alice:alice pass' -o /dev/null -o /dev/null "
                  "-w '%{http_code}:%{num_connects} ' http://x/private/secret.txt http://x/private/secret.txt"),
              "200:1 200:0 ")
        << "kept alive, the second request is let in too";
    EXPECT_TRUE(h.wait_log("wrong password for \"alice\"", 1)) << h.stderr_text();
    EXPECT_TRUE(h.wait_log("no user \"mallory\"", 1)) << h.stderr_text();
    EXPECT_EQ(h.stderr_text().find("Zebra-Guess-42"), std::string::npos) << "a password reached the log";
    // bob leaves the file: the running server refuses him at once.
    ASSERT_EQ(system(("htpasswd -D " + passwords + " bob 2>/dev/null").c_str()), 0);
    EXPECT_EQ(run(curl + "-u bob:bobpw http://x/private/secret.txt"), "401");
    EXPECT_EQ(run(curl + "-u 'alice:alice pass' http://x/private/secret.txt"), "200");
    std::string log_path = h.scratch() + "/access.log";
    EXPECT_TRUE(eventually([&] { return slurp(log_path).find("\"GET /private/secret.txt HTTP/1.1\" 200") != std::string::npos; }));
    std::string log = slurp(log_path);
    EXPECT_NE(log.find("unix - alice ["), std::string::npos) << log;
    EXPECT_NE(log.find("unix - - [") , std::string::npos) << log;
    EXPECT_EQ(log.find("unix - mallory ["), std::string::npos) << "a refused user is not logged as authenticated";
    if (system(("rm -rf " + www).c_str()) != 0) {}
}

TEST(HttpdAuth, BadAuthOptionsAreExit2) {
    NEED_HTTPD();
    struct Case { std::vector<std::string> args; std::string says; };
    const std::vector<Case> cases = {
        {{"--auth", "private=/etc/hostname"}, "bad value 'private=/etc/hostname' for --auth"},
        {{"--auth", "/private/"}, "bad value '/private/' for --auth"},
        {{"--listen", "unix:@/s.sock", "--auth", "/p/=/no/such/file", "@"}, "cannot protect /p/: cannot read /no/such/file"},
        {{"--listen", "unix:@/s.sock", "--auth", "/p/=/etc/hostname", "--auth-realm", "a \"b\"", "@"},
         "the realm holds a quote"},
    };
    for (const Case &c : cases) {
        Httpd h(c.args);
        int status = h.wait(5000);
        ASSERT_GE(status, 0) << "still running with " << c.says;
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << c.says;
        std::string err = h.stderr_text();
        EXPECT_NE(err.find(c.says), std::string::npos) << err;
    }
}
