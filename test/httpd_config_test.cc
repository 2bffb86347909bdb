// httpd_config_test.cc - httpd's --config FILE: options read from a file,
// the command line winning over it, errors naming the file and line, and
// SIGHUP reading it again for the settings that can change.
#include "httpd_fixture.h"

#include <csignal>
#include <cstdio>
#include <string>
#include <vector>

#include <netinet/in.h>
#include <sched.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace {

// A scratch directory with a docroot and a config file in it.
struct ConfigDir {
    std::string path;
    ConfigDir() {
        char name[] = "/tmp/prefork-config-XXXXXX";
        path = mkdtemp(name);
        chmod(path.c_str(), 0755);
        mkdir((path + "/www").c_str(), 0755);
        mkdir((path + "/other").c_str(), 0755);
        write("www/page.txt", "from www\n");
        write("other/page.txt", "from other\n");
    }
    ~ConfigDir() {
        std::string rm = "rm -rf " + path;
        if (system(rm.c_str()) != 0) {}
    }
    void write(const std::string &name, const std::string &text) const {
        FILE *f = fopen((path + "/" + name).c_str(), "w");
        if (!f) return;
        fputs(text.c_str(), f);
        fclose(f);
    }
    std::string file() const { return path + "/httpd.conf"; }
};

// Sends GET path on a new connection; the first line of the answer.
std::string status_line(const Httpd &h, const std::string &path) {
    Client c(h.address());
    c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    return c.line();
}

std::string body_of(const Httpd &h, const std::string &path) {
    Client c(h.address());
    c.send("GET " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    std::string all;
    c.until_eof(&all);
    size_t end = all.find("\r\n\r\n");
    return end == std::string::npos ? "" : all.substr(end + 4);
}

}  // namespace

// Options come from the file, comments and blank lines skipped; the
// command line wins, its lists replacing the file's.
TEST(HttpdConfig, TheFileSetsOptionsAndTheCommandLineWins) {
    NEED_HTTPD();
    ConfigDir d;
    d.write("httpd.conf", "# httpd's settings\n\n"
                          "listen unix:" + d.path + "/from-file.sock   # not used: the command line names one\n"
                          "docroot " + d.path + "/www\n"
                          "status-path /file-status\n"
                          "  keepalive-timeout 7\t# and a comment\n");
    Httpd h({"--config", d.file(), "--listen", "unix:@/s.sock"});
    ASSERT_TRUE(h.running()) << h.stderr_text();
    EXPECT_EQ(body_of(h, "/page.txt"), "from www\n");
    EXPECT_EQ(status_line(h, "/file-status?auto"), "HTTP/1.1 200 OK\r");
    EXPECT_NE(access((d.path + "/from-file.sock").c_str(), F_OK), 0) << "the file's listen was used too";
    // The command line's DOCROOT and status path replace the file's.
    Httpd other({"--config", d.file(), "--listen", "unix:@/s.sock", "--status-path", "/cli-status",
                 d.path + "/other"});
    ASSERT_TRUE(other.running()) << other.stderr_text();
    EXPECT_EQ(body_of(other, "/page.txt"), "from other\n");
    EXPECT_EQ(status_line(other, "/cli-status?auto"), "HTTP/1.1 200 OK\r");
    EXPECT_EQ(status_line(other, "/file-status?auto"), "HTTP/1.1 404 Not Found\r");
}

// httpd's workers are batch processes (Linux SCHED_BATCH) unless
// no-batch-scheduling is given, on the command line or in the file; the
// parent keeps the normal policy. One worker: the one that answered is
// past the point where it sets its policy.
TEST(HttpdConfig, WorkersAreBatchProcessesUnlessToldOnTheCommandLineOrInTheFile) {
    NEED_HTTPD();
#ifndef SCHED_BATCH
    GTEST_SKIP() << "no SCHED_BATCH here";
#else
    ConfigDir dir;
    dir.write("httpd.conf", "no-batch-scheduling\n");
    struct Case { const char *how; std::vector<std::string> args; int policy; };
    const Case cases[] = {
        {"default", {}, SCHED_BATCH},
        {"--no-batch-scheduling", {"--no-batch-scheduling"}, SCHED_OTHER},
        {"in the file", {"--config", dir.file()}, SCHED_OTHER},
    };
    for (const Case &c : cases) {
        SCOPED_TRACE(c.how);
        std::vector<std::string> args = c.args;
        for (const char *a : {"--listen", "unix:@/s.sock", "--start-servers", "1", "--min-spare-servers", "1",
                              "--max-spare-servers", "1", "--max-clients", "1"})
            args.push_back(a);
        args.push_back(dir.path + "/www");
        Httpd h(args);
        ASSERT_TRUE(h.ready()) << h.stderr_text();
        EXPECT_EQ(body_of(h, "/page.txt"), "from www\n");
        std::string children = slurp("/proc/" + std::to_string(h.pid()) + "/task/" + std::to_string(h.pid()) + "/children");
        std::istringstream pids(children);
        pid_t worker = -1;
        ASSERT_TRUE(pids >> worker) << "no worker";
        EXPECT_EQ(sched_getscheduler(worker), c.policy) << "worker " << worker;
        EXPECT_EQ(sched_getscheduler(h.pid()), SCHED_OTHER);
    }
#endif
}

// A bad line is refused at start with the file and line named, exit 2.
TEST(HttpdConfig, ABadLineNamesTheFileAndLine) {
    NEED_HTTPD();
    ConfigDir d;
    struct Case { std::string text, says; };
    for (const Case &c : std::vector<Case>{
             {"# fine\nmax-clients many\n", "httpd.conf:2: bad value 'many' for --max-clients"},
             {"listen\nmax-clients 5\n", "httpd.conf:1: option --listen needs a value"},
             {"\n\nno-such-option 1\n", "httpd.conf:3: unknown option --no-such-option"},
             {"config /etc/other.conf\n", "httpd.conf:1: config cannot be set in a config file"}}) {
        d.write("httpd.conf", c.text);
        Httpd h({"--config", d.file(), "--listen", "unix:@/s.sock"});
        int status = h.wait(5000);
        EXPECT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 2) << c.text;
        EXPECT_NE(h.stderr_text().find(c.says), std::string::npos) << h.stderr_text();
    }
    Httpd missing({"--config", d.path + "/none.conf", "--listen", "unix:@/s.sock"});
    EXPECT_EQ(WEXITSTATUS(missing.wait(5000)), 2);
    EXPECT_NE(missing.stderr_text().find("cannot read the config file " + d.path + "/none.conf"), std::string::npos);
}

// SIGHUP reads the file again: a shorter keepalive-timeout holds for the
// new workers. A file that no longer reads keeps the settings in use.
TEST(HttpdConfig, SighupReadsTheFileAgain) {
    NEED_HTTPD();
    ConfigDir d;
    d.write("httpd.conf", "keepalive-timeout 30\ndocroot " + d.path + "/www\n");
    Httpd h({"--config", d.file(), "--listen", "unix:@/s.sock", "--start-servers", "2"});
    ASSERT_TRUE(h.running()) << h.stderr_text();
    d.write("httpd.conf", "keepalive-timeout 0.3\ndocroot " + d.path + "/www\n");
    ASSERT_EQ(kill(h.pid(), SIGHUP), 0);
    ASSERT_TRUE(h.wait_log("read again: request-timeout 10, keepalive-timeout 0.3,", 1)) << h.stderr_text();
    // The old generation's workers leave; a new one closes an idle
    // kept-alive connection after 0.3 s, not 30.
    ASSERT_TRUE(h.wait_log("generation 2", 1)) << h.stderr_text();
    bool closed_soon = false;
    for (int attempt = 0; attempt < 10 && !closed_soon; attempt++) {
        Client c(h.address());
        c.send("GET /page.txt HTTP/1.1\r\nHost: x\r\n\r\n");
        std::string all;
        int64_t start = harness::now_ms();
        bool eof = c.until_eof(&all, 2000);  // an old worker may still take one: it would keep it 30 s
        closed_soon = eof && harness::now_ms() - start < 1500 && all.find("from www") != std::string::npos;
    }
    EXPECT_TRUE(closed_soon) << h.stderr_text();
    d.write("httpd.conf", "keepalive-timeout soon\n");
    ASSERT_EQ(kill(h.pid(), SIGHUP), 0);
    EXPECT_TRUE(h.wait_log("SIGHUP: " + d.file() + ":1: bad value 'soon' for --keepalive-timeout; keeping the "
                           "settings in use", 1))
        << h.stderr_text();
}

// --error-page sends a file of the docroot for the server's own answers of
// that status, which stays; a handler's or a file's own body is not
// touched. A missing page stops httpd at start.
TEST(HttpdSite, ErrorPagesKeepTheirStatus) {
    NEED_HTTPD();
    ConfigDir d;
    d.write("www/errors.html", "<h1>nothing here</h1>\n");
    d.write("www/forbidden.txt", "keep out\n");
    Httpd h({"--listen", "unix:@/s.sock", "--error-page", "404=/errors.html", "--error-page", "405=/forbidden.txt",
             d.path + "/www"});
    ASSERT_TRUE(h.running()) << h.stderr_text();
    Client c(h.address());
    c.send("GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    std::string all;
    c.until_eof(&all);
    EXPECT_EQ(all.compare(0, 24, "HTTP/1.1 404 Not Found\r\n"), 0) << all;
    EXPECT_NE(all.find("Content-Type: text/html; charset=utf-8\r\n"), std::string::npos) << all;
    EXPECT_EQ(all.substr(all.find("\r\n\r\n") + 4), "<h1>nothing here</h1>\n");
    Client p(h.address());
    p.send("DELETE /page.txt HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    p.until_eof(&all);
    EXPECT_EQ(all.compare(0, 33, "HTTP/1.1 405 Method Not Allowed\r\n"), 0) << all;
    EXPECT_EQ(all.substr(all.find("\r\n\r\n") + 4), "keep out\n");
    EXPECT_EQ(body_of(h, "/page.txt"), "from www\n");
    for (const char *bad : {"404=/none.html", "200=/errors.html", "404=errors.html", "404=/../x"}) {
        Httpd refused({"--listen", "unix:@/s.sock", "--error-page", bad, d.path + "/www"});
        EXPECT_EQ(WEXITSTATUS(refused.wait(5000)), 2) << bad;
        EXPECT_NE(refused.stderr_text().find("httpd: "), std::string::npos) << refused.stderr_text();
    }
}

// --allow and --deny by prefix, over TCP from two loopback addresses: the
// longest prefix with rules decides.
TEST(HttpdSite, AllowAndDenyByPrefix) {
    NEED_HTTPD();
    ConfigDir d;
    mkdir((d.path + "/www/admin").c_str(), 0755);
    d.write("www/admin/index.html", "admin\n");
    int port = 0;
    {
        int probe = socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        socklen_t len = sizeof a;
        bind(probe, reinterpret_cast<sockaddr *>(&a), sizeof a);
        getsockname(probe, reinterpret_cast<sockaddr *>(&a), &len);
        port = ntohs(a.sin_port);
        close(probe);
    }
    std::string listen = "127.0.0.1:" + std::to_string(port);
    Httpd h({"--listen", listen, "--allow", "/admin/=127.0.0.2", "--deny", "/=127.0.0.3/32", d.path + "/www"});
    ASSERT_TRUE(eventually([&] { return Client(listen).connected(); })) << h.stderr_text();
    auto code = [&](const char *source, const std::string &path) {
        return run("curl -s -o /dev/null -w '%{http_code}' --interface " + std::string(source) + " http://" + listen +
                   path);
    };
    if (system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "curl is not installed";
    EXPECT_EQ(code("127.0.0.1", "/page.txt"), "200");
    EXPECT_EQ(code("127.0.0.3", "/page.txt"), "403");
    EXPECT_EQ(code("127.0.0.1", "/admin/"), "403");
    EXPECT_EQ(code("127.0.0.2", "/admin/"), "200");
    Httpd bad({"--listen", "unix:@/s.sock", "--allow", "/admin/=not-an-address", d.path + "/www"});
    EXPECT_EQ(WEXITSTATUS(bad.wait(5000)), 2);
    EXPECT_NE(bad.stderr_text().find("bad value '/admin/=not-an-address' for --allow"), std::string::npos)
        << bad.stderr_text();
}
