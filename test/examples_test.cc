// examples_test.cc - runs the example programs (make examples) as a user
// would: each in a process group of its own, spoken to over a UNIX socket.
#include "harness.h"

#include <gtest/gtest.h>

#include <csignal>
#include <cstdlib>
#include <string>
#include <vector>

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using harness::Client;
using harness::eventually;

namespace {

// Where make built the examples (PREFORK_TEST_EXAMPLES: $(BUILD)), and the
// launcher for a cross build (PREFORK_TEST_LAUNCHER: qemu-user).
std::string example_path(const std::string &name) {
    const char *dir = getenv("PREFORK_TEST_EXAMPLES");
    return std::string(dir && *dir ? dir : "build") + "/" + name;
}

// One example program in a scratch directory, listening on scratch/s.sock.
class Example {
public:
    Example(const std::string &name, std::vector<std::string> args) {
        char dir[] = "/tmp/prefork-example-XXXXXX";
        scratch_ = mkdtemp(dir);
        socket_ = scratch_ + "/s.sock";
        std::string program = example_path(name), log = scratch_ + "/stderr";
        for (std::string &a : args)
            for (size_t at; (at = a.find('@')) != std::string::npos;) a.replace(at, 1, scratch_);
        group_.start([&] {
            int err = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            dup2(err, 2);
            return harness::exec_program(program, args);
        });
    }
    ~Example() {
        group_.stop(3000);
        group_.kill_group();
        std::string rm = "rm -rf " + scratch_;
        if (system(rm.c_str()) != 0) {}
    }
    bool ready() { return eventually([&] { return Client("unix:" + socket_).connected(); }); }
    const std::string &scratch() const { return scratch_; }
    std::string address() const { return "unix:" + socket_; }
    int stop() {
        group_.stop(3000);
        return group_.status();
    }
    bool signal(int sig) { return group_.signal(sig); }
    int wait_exit(int timeout_ms) { return group_.wait_exit(timeout_ms); }

private:
    harness::ProcessGroup group_;
    std::string scratch_, socket_;
};

// One HTTP/1.1 request on a new connection; the whole answer.
std::string http(const std::string &address, const std::string &method, const std::string &path,
                 const std::string &body = "") {
    Client c(address);
    std::string all;
    std::string request = method + " " + path + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n";
    if (!body.empty() || method == "PUT") request += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    c.send(request + "\r\n" + body);
    c.until_eof(&all, 5000);
    return all;
}

bool starts_with(const std::string &text, const std::string &prefix) { return text.compare(0, prefix.size(), prefix) == 0; }
std::string body_of(const std::string &answer) {
    size_t at = answer.find("\r\n\r\n");
    return at == std::string::npos ? "" : answer.substr(at + 4);
}

}  // namespace

TEST(Examples, JsonApiStoresReadsAndDeletesKeys) {
    ASSERT_EQ(access(example_path("example_json_api").c_str(), X_OK), 0)
        << "no " << example_path("example_json_api") << ": make examples";
    Example e("example_json_api", {"unix:@/s.sock", "@"});
    ASSERT_TRUE(e.ready());
    std::string a = e.address();
    EXPECT_TRUE(starts_with(http(a, "GET", "/kv/greeting"), "HTTP/1.1 404 ")) << http(a, "GET", "/kv/greeting");
    std::string put = http(a, "PUT", "/kv/greeting", "hello \"world\"\n");
    EXPECT_TRUE(starts_with(put, "HTTP/1.1 201 ")) << put;
    EXPECT_EQ(body_of(put), "{\"key\":\"greeting\",\"bytes\":14}\n");
    // Any worker reads what another stored: the value is a file.
    for (int i = 0; i < 5; i++) {
        std::string got = http(a, "GET", "/kv/greeting");
        EXPECT_NE(got.find("Content-Type: application/json\r\n"), std::string::npos) << got;
        EXPECT_EQ(body_of(got), "{\"key\":\"greeting\",\"value\":\"hello \\\"world\\\"\\u000a\"}\n");
    }
    EXPECT_TRUE(starts_with(http(a, "DELETE", "/kv/greeting"), "HTTP/1.1 204 "));
    EXPECT_TRUE(starts_with(http(a, "DELETE", "/kv/greeting"), "HTTP/1.1 404 "));
    // The library's own errors, rendered as JSON by its on_error hook.
    std::string dots = http(a, "GET", "/kv/../etc"), name = http(a, "GET", "/kv/a.b");
    std::string method = http(a, "POST", "/kv/greeting");
    EXPECT_TRUE(starts_with(dots, "HTTP/1.1 400 ")) << dots;  // dot segments: refused
    EXPECT_EQ(body_of(dots), "{\"error\":\"Bad Request\"}\n");
    EXPECT_TRUE(starts_with(name, "HTTP/1.1 404 ")) << name;  // not a key name: no route
    EXPECT_EQ(body_of(name), "{\"error\":\"Not Found\"}\n");
    EXPECT_NE(name.find("Content-Type: application/json\r\n"), std::string::npos) << name;
    EXPECT_TRUE(starts_with(method, "HTTP/1.1 405 ")) << method;
    EXPECT_EQ(body_of(method), "{\"error\":\"Method Not Allowed\"}\n");
    EXPECT_NE(method.find("\r\nAllow: GET, HEAD, PUT, DELETE\r\n"), std::string::npos) << method;
    int status = e.stop();
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}

TEST(Examples, LineServerAnswersAndLetsAnIdleClientGoAtAStop) {
    ASSERT_EQ(access(example_path("example_line_kv").c_str(), X_OK), 0)
        << "no " << example_path("example_line_kv") << ": make examples";
    Example e("example_line_kv", {"unix:@/s.sock", "@"});
    ASSERT_TRUE(e.ready());
    {
        Client c(e.address());
        ASSERT_TRUE(c.send("GET a\nSET a hello world\nGET a\nSET ../x 1\nNOPE a\n"));
        EXPECT_EQ(c.line(), "NOT_FOUND");
        EXPECT_EQ(c.line(), "OK");
        EXPECT_EQ(c.line(), "VALUE hello world");
        EXPECT_EQ(c.line(), "ERROR keys are [a-z0-9_-]+");
        EXPECT_EQ(c.line(), "ERROR unknown command");
        ASSERT_TRUE(c.send("QUIT\n"));
        std::string rest;
        EXPECT_TRUE(c.until_eof(&rest, 5000));
        EXPECT_EQ(rest, "");
    }
    Client other(e.address());  // another connection, maybe another worker
    ASSERT_TRUE(other.send("GET a\nDEL a\nGET a\n"));
    EXPECT_EQ(other.line(), "VALUE hello world");
    EXPECT_EQ(other.line(), "OK");
    EXPECT_EQ(other.line(), "NOT_FOUND");
    // The client now idles between commands, its handler in worker.wait():
    // SIGTERM reaches it at once, long before graceful_timeout (30 s).
    int64_t sent = harness::now_ms();
    ASSERT_TRUE(e.signal(SIGTERM));
    EXPECT_EQ(other.line(5000), "BYE server stopping");
    EXPECT_LT(harness::now_ms() - sent, 5000);
    int status = e.wait_exit(10000);
    EXPECT_TRUE(status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
}
