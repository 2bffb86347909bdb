// cgi_test.cc - CGI/1.1 through the httpd program (--cgi), with shell and
// Python scripts written here and curl as the client: the meta-variables,
// bodies in and out, the script's head, nph- scripts, stderr, and the
// scripts that hang, die, leave or may not run.
#include "httpd_fixture.h"

#include <csignal>
#include <string>
#include <vector>

#include <sys/stat.h>
#include <unistd.h>

namespace {

// A docroot and a cgi-bin beside it, with the scripts the tests run.
struct Site {
    std::string root;
    Site() {
        char name[] = "/tmp/prefork-cgi-XXXXXX";
        root = mkdtemp(name);
        chmod(root.c_str(), 0755);
        mkdir((root + "/www").c_str(), 0755);
        mkdir((root + "/cgi-bin").c_str(), 0755);
        mkdir((root + "/cgi-bin/sub").c_str(), 0755);
        file("www/hello.txt", "hello from the docroot\n", 0644);
        script("env.sh", "printf 'Content-Type: text/plain\\r\\n\\r\\n'\nenv | sort\n");
        script("sub/deep.sh", "printf 'Content-Type: text/plain\\n\\ndeep %s\\n' \"$SCRIPT_NAME\"\n");
        script("post.py",
               "#!/usr/bin/env python3\nimport os, sys, hashlib\n"
               "data = sys.stdin.buffer.read(int(os.environ.get('CONTENT_LENGTH', '0')))\n"
               "sys.stdout.write('Content-Type: text/plain\\n\\n%d %s %s\\n' % (len(data), "
               "hashlib.sha256(data).hexdigest(), os.environ.get('CONTENT_TYPE', '-')))\n");
        script("status.sh", "printf 'Status: 201 Created\\nX-Made: yes\\nContent-Length: 99\\n\\nmade\\n'\n");
        script("local.sh", "printf 'Location: /hello.txt\\n\\nignored body\\n'\n");
        script("away.sh", "printf 'Location: http://example.com/elsewhere\\n\\n'\n");
        script("nph-raw.sh", "printf 'HTTP/1.1 299 Raw\\r\\nX-Nph: 1\\r\\n\\r\\nraw body\\n'\n");
        script("big.py",
               "#!/usr/bin/env python3\nimport sys\nsys.stdout.write('Content-Type: application/octet-stream\\n\\n')\n"
               "sys.stdout.flush()\nblock = bytes(range(256)) * 256\n"
               "for i in range(80):\n    sys.stdout.buffer.write(block)\n");
        script("hang.sh",
               "echo $$ > " + root + "/hang.pid\nsleep 300 &\necho $! > " + root + "/hang-child.pid\n"
               "printf 'Content-Type: text/plain\\n\\nfirst\\n'\nwait\n");
        script("stderr.sh", "echo 'something went wrong' >&2\necho 'and a second line' >&2\n"
                            "printf 'Content-Type: text/plain\\n\\nfine\\n'\n");
        script("silent.sh", "exit 3\n");
        script("badhead.sh", "printf 'this is not a header\\n\\nbody\\n'\n");
        script("fds.py",
               "#!/usr/bin/env python3\nimport os\nopen_fds = []\nfor fd in range(256):\n"
               "    try:\n        os.fstat(fd)\n        open_fds.append(str(fd))\n    except OSError:\n        pass\n"
               "print('Content-Type: text/plain\\n')\nprint(' '.join(open_fds))\n");
        file("cgi-bin/not-executable.sh", "#!/bin/sh\necho no\n", 0644);
        script(".hidden.sh", "printf 'Content-Type: text/plain\\n\\nhidden\\n'\n");
        symlink("/bin/sh", (root + "/cgi-bin/shell").c_str());
    }
    ~Site() {
        std::string rm = "rm -rf " + root;
        if (system(rm.c_str()) != 0) {}
    }
    void file(const std::string &name, const std::string &text, mode_t mode) {
        std::string path = root + "/" + name;
        FILE *f = fopen(path.c_str(), "w");
        if (!f) return;
        fwrite(text.data(), 1, text.size(), f);
        fclose(f);
        chmod(path.c_str(), mode);
    }
    void script(const std::string &name, const std::string &text) {
        file("cgi-bin/" + name, text.compare(0, 2, "#!") == 0 ? text : "#!/bin/sh\n" + text, 0755);
    }
    std::vector<std::string> args(std::vector<std::string> more = {}) const {
        std::vector<std::string> a = {"--listen", "unix:@/s.sock", "--cgi", "/cgi-bin/=" + root + "/cgi-bin"};
        a.insert(a.end(), more.begin(), more.end());
        a.push_back(root + "/www");
        return a;
    }
};

bool have_curl() { return system("command -v curl >/dev/null 2>&1") == 0; }

#define NEED_CURL() \
    if (!have_curl()) GTEST_SKIP() << "curl is not installed (.ci/run installs it)"

std::string curl(const Httpd &h, const std::string &args) {
    return run("curl -s --max-time 20 --unix-socket " + h.scratch() + "/s.sock " + args);
}

// The value of NAME in an `env | sort` listing, or "(unset)".
std::string variable(const std::string &env, const std::string &name) {
    std::string lines = "\n" + env;
    size_t at = lines.find("\n" + name + "=");
    if (at == std::string::npos) return "(unset)";
    size_t start = at + name.size() + 2;
    return lines.substr(start, lines.find('\n', start) - start);
}

bool process_alive(pid_t pid) { return pid > 0 && kill(pid, 0) == 0; }

pid_t pid_from(const std::string &path) {
    pid_t pid = 0;
    eventually([&] { return (pid = pid_t(atol(slurp(path).c_str()))) > 0; });
    return pid;
}

}  // namespace

// RFC 3875's meta-variables, the fields as HTTP_*, and nothing else: no
// HTTP_PROXY (httpoxy), no Authorization, nothing of httpd's environment.
TEST(Cgi, TheScriptSeesTheMetaVariablesAndACleanEnvironment) {
    NEED_HTTPD();
    NEED_CURL();
    Site site;
    Httpd h(site.args(), true, [] { setenv("HTTPD_SECRET", "leaked", 1); });
    ASSERT_TRUE(h.running()) << h.stderr_text();
    std::string env = curl(h, "-H 'Proxy: http://evil:8080' -H 'X-Probe: a' -H 'X-Probe: b' -u user:pass "
                              "'http://x.example:8080/cgi-bin/env.sh/more/path%20info?q=1&r=two'");
    EXPECT_EQ(variable(env, "GATEWAY_INTERFACE"), "CGI/1.1") << env;
    EXPECT_EQ(variable(env, "SERVER_SOFTWARE"), "prefork-httpd/0.1.0");
    EXPECT_EQ(variable(env, "SERVER_NAME"), "x.example");
    EXPECT_EQ(variable(env, "SERVER_PROTOCOL"), "HTTP/1.1");
    EXPECT_EQ(variable(env, "REQUEST_METHOD"), "GET");
    EXPECT_EQ(variable(env, "REQUEST_URI"), "/cgi-bin/env.sh/more/path%20info?q=1&r=two");
    EXPECT_EQ(variable(env, "SCRIPT_NAME"), "/cgi-bin/env.sh");
    EXPECT_EQ(variable(env, "SCRIPT_FILENAME"), site.root + "/cgi-bin/env.sh");
    EXPECT_EQ(variable(env, "PATH_INFO"), "/more/path info");
    EXPECT_EQ(variable(env, "PATH_TRANSLATED"), site.root + "/www/more/path info");
    EXPECT_EQ(variable(env, "DOCUMENT_ROOT"), site.root + "/www");
    EXPECT_EQ(variable(env, "QUERY_STRING"), "q=1&r=two");
    EXPECT_EQ(variable(env, "REMOTE_ADDR"), "unix");
    EXPECT_EQ(variable(env, "HTTP_X_PROBE"), "a, b");
    EXPECT_EQ(variable(env, "HTTP_HOST"), "x.example:8080");
    EXPECT_EQ(variable(env, "PATH"), "/usr/local/bin:/usr/bin:/bin");
    EXPECT_EQ(variable(env, "HTTP_PROXY"), "(unset)");
    EXPECT_EQ(variable(env, "HTTP_AUTHORIZATION"), "(unset)");
    EXPECT_EQ(variable(env, "HTTPD_SECRET"), "(unset)");
    EXPECT_EQ(variable(env, "CONTENT_LENGTH"), "(unset)");
    EXPECT_EQ(curl(h, "http://x/cgi-bin/sub/deep.sh"), "deep /cgi-bin/sub/deep.sh\n");
}

// The body reaches stdin whole, by length or de-chunked, with
// CONTENT_LENGTH and CONTENT_TYPE set.
TEST(Cgi, TheBodyIsOnStdinWholeEvenWhenItCameChunked) {
    NEED_HTTPD();
    NEED_CURL();
    Site site;
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    std::string body(300000, 'x');
    for (size_t i = 0; i < body.size(); i += 7) body[i] = char('a' + i % 26);
    std::string path = h.scratch() + "/body";
    FILE *f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fwrite(body.data(), 1, body.size(), f);
    fclose(f);
    std::string digest = run("sha256sum " + path + " | cut -d' ' -f1");
    digest.pop_back();
    std::string expected = "300000 " + digest + " application/x-test\n";
    EXPECT_EQ(curl(h, "-H 'Content-Type: application/x-test' --data-binary @" + path + " http://x/cgi-bin/post.py"),
              expected);
    EXPECT_EQ(curl(h, "-H 'Content-Type: application/x-test' -H 'Transfer-Encoding: chunked' --data-binary @" +
                          path + " http://x/cgi-bin/post.py"),
              expected);
}

// Status and the fields come from the script's head (its Content-Length
// does not: the responder frames the body); a local Location is served
// from inside, a URL is a 302; an nph- script's output is the response.
TEST(Cgi, TheScriptsHeadSetsTheResponseAndNphIsPassedThrough) {
    NEED_HTTPD();
    NEED_CURL();
    Site site;
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    std::string made = curl(h, "-i http://x/cgi-bin/status.sh");
    EXPECT_EQ(made.compare(0, 21, "HTTP/1.1 201 Created\r"), 0) << made;
    EXPECT_NE(made.find("X-Made: yes\r\n"), std::string::npos) << made;
    EXPECT_EQ(made.find("Content-Length: 99"), std::string::npos) << made;
    EXPECT_EQ(made.substr(made.find("\r\n\r\n") + 4), "made\n");
    EXPECT_EQ(curl(h, "-w ' %{http_code}' http://x/cgi-bin/local.sh"), "hello from the docroot\n 200");
    EXPECT_EQ(curl(h, "-o /dev/null -w '%{http_code} %{redirect_url}' http://x/cgi-bin/away.sh"),
              "302 http://example.com/elsewhere");
    std::string raw = curl(h, "-i http://x/cgi-bin/nph-raw.sh");
    EXPECT_EQ(raw, "HTTP/1.1 299 Raw\r\nX-Nph: 1\r\n\r\nraw body\n");
}

// A large output is streamed as it comes (chunked for HTTP/1.1, to the
// close for 1.0), every byte intact.
TEST(Cgi, ALargeOutputIsStreamedWhole) {
    NEED_HTTPD();
    NEED_CURL();
    Site site;
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    std::string expected = run("python3 -c 'import sys; sys.stdout.buffer.write(bytes(range(256)) * 256 * 80)' | "
                               "sha256sum");
    EXPECT_EQ(run("curl -s --unix-socket " + h.scratch() + "/s.sock http://x/cgi-bin/big.py | sha256sum"), expected);
    EXPECT_EQ(run("curl -s -0 --unix-socket " + h.scratch() + "/s.sock http://x/cgi-bin/big.py | sha256sum"),
              expected);
    EXPECT_NE(curl(h, "-o /dev/null -D - http://x/cgi-bin/big.py").find("Transfer-Encoding: chunked"),
              std::string::npos);
}

// stderr goes to the error log line by line, named; a script that ends
// without a head, or with a malformed one, is a 502 and a log line.
TEST(Cgi, StderrIsLoggedAndAScriptWithoutAHeadIsA502) {
    NEED_HTTPD();
    NEED_CURL();
    Site site;
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    EXPECT_EQ(curl(h, "http://x/cgi-bin/stderr.sh"), "fine\n");
    EXPECT_TRUE(h.wait_log("]: something went wrong", 1)) << h.stderr_text();
    EXPECT_TRUE(h.wait_log("cgi /cgi-bin/stderr.sh[", 2)) << h.stderr_text();
    EXPECT_EQ(curl(h, "-o /dev/null -w '%{http_code}' http://x/cgi-bin/silent.sh"), "502");
    EXPECT_TRUE(h.wait_log("ended without a head (exit status 3)", 1)) << h.stderr_text();
    EXPECT_EQ(curl(h, "-o /dev/null -w '%{http_code}' http://x/cgi-bin/badhead.sh"), "502");
    EXPECT_TRUE(h.wait_log("sent a malformed head: killed", 1)) << h.stderr_text();
}

// The script sees descriptors 0, 1 and 2 only.
TEST(Cgi, TheScriptInheritsNoOtherDescriptor) {
    NEED_HTTPD();
    NEED_CURL();
    Site site;
    Httpd h(site.args({"--access-log", "@/access.log"}));
    ASSERT_TRUE(h.running()) << h.stderr_text();
    EXPECT_EQ(curl(h, "http://x/cgi-bin/fds.py"), "0 1 2\n");
}

// A script past --cgi-timeout is killed with its whole process group;
// the client gets what was sent and a cut stream, and no zombie is left.
TEST(Cgi, AScriptPastTheTimeoutIsKilledWithItsGroup) {
    NEED_HTTPD();
    NEED_CURL();
    Site site;
    Httpd h(site.args({"--cgi-timeout", "1"}));
    ASSERT_TRUE(h.running()) << h.stderr_text();
    std::string out = curl(h, "-w ' %{http_code}' http://x/cgi-bin/hang.sh");
    EXPECT_EQ(out, "first\n 200");  // the chunked body ended short: curl still prints what came
    EXPECT_TRUE(h.wait_log("ran past cgi_timeout: killed", 1)) << h.stderr_text();
    pid_t script = pid_from(site.root + "/hang.pid"), child = pid_from(site.root + "/hang-child.pid");
    EXPECT_TRUE(eventually([&] { return !process_alive(script) && !process_alive(child); }))
        << "the script or its child outlived the timeout";
    EXPECT_EQ(curl(h, "http://x/cgi-bin/stderr.sh"), "fine\n");
}

// A client that leaves takes its script with it.
TEST(Cgi, AScriptWhoseClientLeavesIsKilled) {
    NEED_HTTPD();
    Site site;
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    {
        Client c(h.address());
        ASSERT_TRUE(c.send("GET /cgi-bin/hang.sh HTTP/1.1\r\nHost: x\r\n\r\n"));
        EXPECT_EQ(c.line(), "HTTP/1.1 200 OK\r");
    }
    pid_t script = pid_from(site.root + "/hang.pid"), child = pid_from(site.root + "/hang-child.pid");
    EXPECT_TRUE(h.wait_log("the client went away: killed", 1, 10000)) << h.stderr_text();
    EXPECT_TRUE(eventually([&] { return !process_alive(script) && !process_alive(child); }));
}

// Only executable regular files beneath the directory run: not a file
// without x, a dotfile, a symlink, a directory, or a path that climbs out.
TEST(Cgi, OnlyExecutableFilesBeneathTheDirectoryRun) {
    NEED_HTTPD();
    NEED_CURL();
    Site site;
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    auto code = [&](const std::string &path) {
        return curl(h, "--path-as-is -o /dev/null -w '%{http_code}' 'http://x" + path + "'");
    };
    EXPECT_EQ(code("/cgi-bin/not-executable.sh"), "403");
    EXPECT_EQ(code("/cgi-bin/.hidden.sh"), "404");
    EXPECT_EQ(code("/cgi-bin/shell"), "403");
    EXPECT_EQ(code("/cgi-bin/sub"), "403");
    EXPECT_EQ(code("/cgi-bin/"), "404");
    EXPECT_EQ(code("/cgi-bin/missing.sh"), "404");
    EXPECT_EQ(code("/cgi-bin/../www/hello.txt"), "400");
    EXPECT_EQ(code("/cgi-bin/%2e%2e/cgi-bin/env.sh"), "400");
    EXPECT_EQ(code("/cgi-bin/env.sh"), "200");
}

// Bad --cgi values are refused at start with one line.
TEST(Cgi, BadCgiOptionsAreRefused) {
    NEED_HTTPD();
    Site site;
    for (auto args : std::vector<std::vector<std::string>>{
             {"--cgi", "/cgi-bin/"}, {"--cgi", "cgi-bin/=" + site.root}, {"--cgi", "/x/=" + site.root + "/none"},
             {"--cgi-timeout", "0"}}) {
        args.insert(args.begin(), {"--listen", "unix:@/s.sock"});
        Httpd h(args);
        int status = h.wait(5000);
        EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << args[3] << ": " << h.stderr_text();
        EXPECT_NE(h.stderr_text().find("httpd: "), std::string::npos) << h.stderr_text();
    }
}

// A real CGI application packaged in Debian: cgit (package cgit), through
// a wrapper script as it is usually deployed, on a repository made here:
// its index, a page it routes by PATH_INFO, and a file's raw bytes.
TEST(Cgi, RunsCgitFromDebian) {
    NEED_HTTPD();
    NEED_CURL();
    if (access("/usr/lib/cgit/cgit.cgi", X_OK) != 0 || system("command -v git >/dev/null 2>&1") != 0)
        GTEST_SKIP() << "cgit or git is not installed (.ci/run installs them)";
    Site site;
    std::string repo = site.root + "/demo.git", work = site.root + "/work";
    std::string make_repo = "set -e; git init -q -b main " + work + "; cd " + work +
                            "; printf 'hello from cgit\\n' > README; git add README; "
                            "git -c user.name=Test -c user.email=test@example.com commit -q -m 'first commit'; "
                            "git clone -q --bare " + work + " " + repo;
    ASSERT_EQ(system(("sh -c \"" + make_repo + "\" >/dev/null 2>&1").c_str()), 0);
    site.file("cgitrc", "virtual-root=/cgi-bin/cgit.sh/\ncache-size=0\nrepo.url=demo\nrepo.path=" + repo +
                            "\nrepo.desc=a repository for the test\n", 0644);
    site.script("cgit.sh", "CGIT_CONFIG=" + site.root + "/cgitrc exec /usr/lib/cgit/cgit.cgi\n");
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    std::string index = curl(h, "http://x/cgi-bin/cgit.sh/");
    EXPECT_NE(index.find("a repository for the test"), std::string::npos) << index.substr(0, 2000);
    std::string log = curl(h, "http://x/cgi-bin/cgit.sh/demo/log/");
    EXPECT_NE(log.find("first commit"), std::string::npos) << log.substr(0, 2000);
    EXPECT_EQ(curl(h, "http://x/cgi-bin/cgit.sh/demo/plain/README"), "hello from cgit\n") << h.stderr_text();
    EXPECT_EQ(curl(h, "-o /dev/null -w '%{http_code}' http://x/cgi-bin/cgit.sh/nothing/here/"), "404");
}

// A worker killed outright (SIGKILL) takes its script along: the script
// gets SIGKILL as its parent dies (Linux).
TEST(Cgi, AScriptDiesWithItsKilledWorker) {
    NEED_HTTPD();
    Site site;
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    Client c(h.address());
    ASSERT_TRUE(c.send("GET /cgi-bin/hang.sh HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(c.line(), "HTTP/1.1 200 OK\r");
    pid_t script = pid_from(site.root + "/hang.pid");
    std::string stat = slurp("/proc/" + std::to_string(script) + "/stat");
    size_t after_name = stat.rfind(')');
    ASSERT_NE(after_name, std::string::npos);
    pid_t worker = pid_t(atol(stat.c_str() + after_name + 4));  // ") S PPID"
    ASSERT_GT(worker, 1);
    ASSERT_NE(worker, h.pid());
    ASSERT_EQ(kill(worker, SIGKILL), 0);
    EXPECT_TRUE(eventually([&] { return !process_alive(script); })) << "the script outlived its worker";
    kill(pid_from(site.root + "/hang-child.pid"), SIGKILL);  // its own child is not covered: end it here
}

// A script's head leaves as soon as it is whole, before its body.
TEST(Cgi, TheHeadLeavesBeforeTheBody) {
    NEED_HTTPD();
    Site site;
    site.script("later.sh", "printf 'Content-Type: text/plain\\n\\n'\nsleep 2\necho later\n");
    Httpd h(site.args());
    ASSERT_TRUE(h.running()) << h.stderr_text();
    Client c(h.address());
    ASSERT_TRUE(c.send("GET /cgi-bin/later.sh HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(c.line(1000), "HTTP/1.1 200 OK\r");
    std::string body;
    EXPECT_FALSE(c.until_eof(&body, 100));  // the body is not there yet
}

// Behind --auth, the script sees who logged in (AUTH_TYPE, REMOTE_USER);
// the password itself never reaches it.
TEST(Cgi, AScriptBehindAuthSeesTheUser) {
    NEED_HTTPD();
    NEED_CURL();
    if (system("command -v htpasswd >/dev/null 2>&1") != 0) GTEST_SKIP() << "htpasswd (apache2-utils) is not installed";
    Site site;
    ASSERT_EQ(system(("htpasswd -cbm " + site.root + "/users alice 's3cret pass' 2>/dev/null").c_str()), 0);
    Httpd h(site.args({"--auth", "/cgi-bin/=" + site.root + "/users", "--auth-realm", "admin"}));
    ASSERT_TRUE(h.running()) << h.stderr_text();
    EXPECT_EQ(curl(h, "-o /dev/null -w '%{http_code}' http://x/cgi-bin/env.sh"), "401");
    std::string env = curl(h, "-u 'alice:s3cret pass' http://x/cgi-bin/env.sh");
    EXPECT_EQ(variable(env, "AUTH_TYPE"), "Basic") << env;
    EXPECT_EQ(variable(env, "REMOTE_USER"), "alice");
    EXPECT_EQ(env.find("s3cret"), std::string::npos);
    EXPECT_EQ(variable(env, "HTTP_AUTHORIZATION"), "(unset)");
}
