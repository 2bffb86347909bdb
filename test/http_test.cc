// http_test.cc - the HTTP/1.1 responder end to end over loopback, with raw
// sockets, plus unit tests of its pieces (chunked decoding, percent
// decoding, response fields). Every test that sends something bad checks
// that the server still answers a good request afterwards.
#include "harness.h"
#include "prefork.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <string>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

using harness::Client;
using harness::TestServer;

namespace {

struct Response {
    int status = 0;
    std::map<std::string, std::string> fields;  // lower-case names
    std::string body;
    bool ok = false;
};

std::string lower(std::string s) {
    for (char &c : s) c = char(tolower((unsigned char)c));
    return s;
}

// Reads one response; its body by Content-Length unless the request was HEAD.
Response read_response(Client &c, bool head = false, int timeout_ms = 5000) {
    Response r;
    std::string status_line = c.line(timeout_ms);
    if (status_line.size() < 12 || status_line.compare(0, 9, "HTTP/1.1 ") != 0) return r;
    r.status = atoi(status_line.c_str() + 9);
    for (;;) {
        std::string line = c.line(timeout_ms);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (line.empty()) break;
        size_t colon = line.find(':');
        if (colon == std::string::npos) return r;
        r.fields[lower(line.substr(0, colon))] = line.substr(line.find_first_not_of(' ', colon + 1));
    }
    if (!head && r.fields.count("content-length"))
        r.body = c.bytes(size_t(atol(r.fields["content-length"].c_str())), timeout_ms);
    r.ok = true;
    return r;
}

// The service every test server here runs: echo routes that show what a
// handler sees.
std::unique_ptr<prefork::HttpService> make_service(const prefork::HttpOptions &options) {
    std::unique_ptr<prefork::HttpService> http(new prefork::HttpService(options));
    http->route("GET", "^/pid$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.body(std::to_string(getpid()));
    });
    http->route("POST", "^/echo$", [](prefork::HttpContext &ctx, prefork::HttpResponse &r) {
        r.header("Content-Type", "application/octet-stream");
        r.body(ctx.body);
    });
    http->route("GET", "^/items/([0-9]+)/([a-z]+)$", [](prefork::HttpContext &ctx, prefork::HttpResponse &r) {
        r.body(std::string(ctx.captures.at(0)) + "|" + std::string(ctx.captures.at(1)) + "|" +
               std::string(ctx.query));
    });
    http->route("GET", "^/items/", [](prefork::HttpContext &, prefork::HttpResponse &r) { r.body("second"); });
    // Plain routes are matched by string comparison, the others by regexec:
    // both must mean what the regex says.
    http->route("GET", "^/a\\.b$", [](prefork::HttpContext &, prefork::HttpResponse &r) { r.body("literal dot"); });
    http->route("GET", "^/a.c$", [](prefork::HttpContext &, prefork::HttpResponse &r) { r.body("any char"); });
    http->route("GET", "^/path/", [](prefork::HttpContext &ctx, prefork::HttpResponse &r) {
        r.body(std::string(ctx.path) + " " + std::string(ctx.header("x-probe")));
    });
    http->route("GET", "^/split$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        bool refused = !r.header("Location", "/x\r\nSet-Cookie: evil=1") && !r.header("Bad Name", "v");
        r.body(refused ? "refused" : "accepted");
    });
    http->route("GET", "^/big$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.body(std::string(8 << 20, 'b'));
    });
    http->route("GET", "^/throw$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.body("half an answer");
        throw std::runtime_error("thrown on purpose");
    });
    return http;
}

struct HttpServer {
    prefork::HttpOptions options;
    std::unique_ptr<prefork::HttpService> http;
    TestServer t;

    explicit HttpServer(double request_timeout = 2, double keepalive_timeout = 2, size_t max_body = 4096) {
        options.request_timeout = request_timeout;
        options.keepalive_timeout = keepalive_timeout;
        options.max_body = max_body;
        options.server_name = "test-httpd";
        rebuild();
    }
    // Makes the service again from options (after a test changed them).
    void rebuild() {
        http = make_service(options);
        prefork::HttpService *service = http.get();
        t.handler = [service](prefork::Worker &w, int fd) { service->serve(w, fd); };
    }
    bool start() { return t.start(); }
    // A fresh connection still gets a good answer.
    bool still_answers() {
        Client c(t.address());
        c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n");
        Response r = read_response(c);
        return r.ok && r.status == 200;
    }
};

}  // namespace

TEST(Http, AnswersWithDateServerLengthAndType) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = read_response(c);
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.fields["server"], "test-httpd");
    EXPECT_EQ(r.fields["content-type"], "text/plain; charset=utf-8");
    EXPECT_EQ(r.fields["content-length"], std::to_string(r.body.size()));
    EXPECT_EQ(r.fields["date"].size(), 29u) << r.fields["date"];
    EXPECT_EQ(r.fields["date"].substr(26), "GMT");
    EXPECT_GT(atoi(r.body.c_str()), 0);
}

TEST(Http, HeadHasTheLengthButNoBody) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("HEAD /pid HTTP/1.1\r\nHost: x\r\n\r\nGET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response head = read_response(c, true);
    ASSERT_TRUE(head.ok);
    EXPECT_EQ(head.status, 200);
    Response get = read_response(c);  // would be garbled if HEAD had sent a body
    ASSERT_TRUE(get.ok);
    EXPECT_EQ(head.fields["content-length"], get.fields["content-length"]);
}

TEST(Http, KeepAliveIsTheDefaultIn11AndPipelinedRequestsAnswerInOrder) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /items/1/a HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /items/2/b?q=1 HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /items/3/c HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(read_response(c).body, "1|a|");
    EXPECT_EQ(read_response(c).body, "2|b|q=1");
    EXPECT_EQ(read_response(c).body, "3|c|");
    ASSERT_TRUE(c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    std::string first = read_response(c).body;
    ASSERT_TRUE(c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(read_response(c).body, first) << "a kept-alive connection stays with its worker";
}

TEST(Http, ConnectionCloseAndHttp10AreHonoured) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    {
        Client c(s.t.address());
        ASSERT_TRUE(c.send("GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"));
        Response r = read_response(c);
        EXPECT_EQ(r.fields["connection"], "close");
        std::string rest;
        EXPECT_TRUE(c.until_eof(&rest, 2000));
        EXPECT_EQ(rest, "");
    }
    {
        Client c(s.t.address());
        ASSERT_TRUE(c.send("GET /pid HTTP/1.0\r\n\r\n"));
        Response r = read_response(c);
        EXPECT_EQ(r.status, 200);
        EXPECT_EQ(r.fields["connection"], "close");
        std::string rest;
        EXPECT_TRUE(c.until_eof(&rest, 2000));
    }
    {
        Client c(s.t.address());
        ASSERT_TRUE(c.send("GET /pid HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        Response r = read_response(c);
        EXPECT_EQ(r.fields["connection"], "keep-alive");
        ASSERT_TRUE(c.send("GET /pid HTTP/1.0\r\n\r\n"));
        EXPECT_EQ(read_response(c).status, 200) << "the 1.0 keep-alive connection was closed";
    }
}

TEST(Http, MalformedRequestsGetTheirStatusAndAClose) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    struct Case { std::string request; int status; };
    const Case cases[] = {
        {"GET /pid HTTP/1.1\r\n\r\n", 400},                          // no Host
        {"GET /pid HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
        {"GET /pid HTTP/1.1\r\nHost : x\r\n\r\n", 400},
        {"GET /pid HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400},
        {"GET /pid HTTP/2.0\r\nHost: x\r\n\r\n", 505},
        {"GET /" + std::string(9000, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n", 414},
        {"GET /pid HTTP/1.1\r\nHost: x\r\nX: " + std::string(17000, 'v') + "\r\n\r\n", 431},
        {"GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET /a%00 HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"GET pid HTTP/1.1\r\nHost: x\r\n\r\n", 400},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 400},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 400},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n", 413},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400},
        {"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n1001\r\n", 413},
    };
    for (const Case &k : cases) {
        Client c(s.t.address());
        ASSERT_TRUE(c.send(k.request));
        Response r = read_response(c);
        EXPECT_EQ(r.status, k.status) << k.request.substr(0, 70);
        EXPECT_EQ(r.fields["connection"], "close") << k.request.substr(0, 70);
        std::string rest;
        EXPECT_TRUE(c.until_eof(&rest, 2000)) << "not closed after " << k.request.substr(0, 70);
        EXPECT_TRUE(s.still_answers()) << "after " << k.request.substr(0, 70);
    }
}

// A raw TCP connection to "127.0.0.1:PORT", from `source` when given
// (another loopback address); -1 on failure.
static int raw_connect(const std::string &address, const char *source = nullptr) {
    sockaddr_in to{};
    to.sin_family = AF_INET;
    to.sin_port = htons(uint16_t(atoi(address.substr(address.find(':') + 1).c_str())));
    to.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    sockaddr_in from{};
    from.sin_family = AF_INET;
    if ((source && (inet_pton(AF_INET, source, &from.sin_addr) != 1 ||
                    bind(fd, reinterpret_cast<sockaddr *>(&from), sizeof from) != 0)) ||
        connect(fd, reinterpret_cast<sockaddr *>(&to), sizeof to) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

// Sends request on a raw connection, returns all it gets until the end and
// closes it; *end_errno (when given) is 0 for a clean end (FIN), else the
// error that ended it, -1 for a timeout (5 s).
static std::string raw_exchange(int fd, const std::string &request, int *end_errno = nullptr) {
    std::string answer;
    int ended = -1;
    if (fd < 0 || send(fd, request.data(), request.size(), MSG_NOSIGNAL) != ssize_t(request.size())) {
        ended = errno;
    } else {
        int64_t deadline = harness::now_ms() + 5000;
        while (harness::now_ms() < deadline) {
            pollfd p = {fd, POLLIN, 0};
            if (poll(&p, 1, 100) <= 0) continue;
            char buf[4096];
            ssize_t n = recv(fd, buf, sizeof buf, 0);
            if (n > 0) {
                answer.append(buf, size_t(n));
                continue;
            }
            ended = n == 0 ? 0 : errno;
            break;
        }
    }
    if (fd >= 0) close(fd);
    if (end_errno) *end_errno = ended;
    return answer;
}

// A refused upload: the client is still sending when the answer goes out.
// The server drains it before closing, so the client reads the answer and
// then a clean end (FIN); closing on unread input would reset the
// connection (ECONNRESET), and a reset can destroy the answer.
TEST(Http, ARefusedUploadEndsWithTheAnswerAndAFinNotAReset) {
    HttpServer s;  // max_body 4096
    ASSERT_TRUE(s.start());
    int fd = raw_connect(s.t.address());
    ASSERT_GE(fd, 0);
    std::string upload = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" +
                         std::string(60000, 'b');
    int end_errno = -1;
    std::string answer = raw_exchange(fd, upload, &end_errno);
    EXPECT_EQ(answer.compare(0, 12, "HTTP/1.1 413"), 0) << answer;
    EXPECT_EQ(end_errno, 0) << "the connection ended with: " << strerror(end_errno);
    EXPECT_TRUE(s.still_answers());
}

TEST(Http, BodiesByLengthAndChunkedAreRead) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world"
                       "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       "5;ext=1\r\nhello\r\n6\r\n chunk\r\n0\r\nTrailer: t\r\n\r\n"
                       "GET /items/9/z HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response a = read_response(c);
    EXPECT_EQ(a.body, "hello world");
    EXPECT_EQ(a.fields["content-type"], "application/octet-stream");
    EXPECT_EQ(read_response(c).body, "hello chunk");
    EXPECT_EQ(read_response(c).body, "9|z|") << "the bytes after a body belong to the next request";
}

TEST(Http, ExpectContinueGets100First) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n"));
    EXPECT_EQ(c.line(), "HTTP/1.1 100 Continue\r");
    EXPECT_EQ(c.line(), "\r");
    ASSERT_TRUE(c.send("data"));
    EXPECT_EQ(read_response(c).body, "data");
}

TEST(Http, RoutesMatchInOrderAndUnknownMethodsGet405WithAllow) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /items/x HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /a.b HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /axb HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /axc HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /pid/more HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n"
                       "DELETE /pid HTTP/1.1\r\nHost: x\r\n\r\n"
                       "GET /path/a%20b%2Fc HTTP/1.1\r\nHost: x\r\nX-Probe: seen\r\n\r\n"));
    EXPECT_EQ(read_response(c).body, "second");
    EXPECT_EQ(read_response(c).body, "literal dot");
    EXPECT_EQ(read_response(c).status, 404);  // "\\." is a dot, nothing else
    EXPECT_EQ(read_response(c).body, "any char");
    EXPECT_EQ(read_response(c).status, 404);  // "$" ends a plain route too
    EXPECT_EQ(read_response(c).status, 404);
    Response no = read_response(c);
    EXPECT_EQ(no.status, 405);
    EXPECT_EQ(no.fields["allow"], "GET, HEAD");
    EXPECT_EQ(read_response(c).body, "/path/a b/c seen");
}

TEST(Http, NoHandlerCanSplitAResponse) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /split HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = read_response(c);
    EXPECT_EQ(r.body, "refused");
    EXPECT_EQ(r.fields.count("set-cookie"), 0u);
    EXPECT_EQ(r.fields.count("location"), 0u);
}

// An exception escaping a route is the route's 500, logged with the route
// and what(); the worker is not lost and what the handler had written so
// far never reaches the client.
TEST(Http, ARouteThatThrowsGets500AndTheWorkerGoesOn) {
    HttpServer s;
    s.t.options.start_servers = 1;
    s.t.options.min_spare_servers = 1;
    s.t.options.max_spare_servers = 1;
    ASSERT_TRUE(s.start());
    ASSERT_TRUE(s.t.wait_workers(1));
    std::vector<pid_t> before = s.t.workers();
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /throw HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = read_response(c);
    EXPECT_EQ(r.status, 500);
    EXPECT_EQ(r.body, "500 Internal Server Error\n");
    EXPECT_EQ(r.fields["connection"], "close");
    EXPECT_TRUE(s.t.wait_log("route GET ^/throw$ threw: thrown on purpose; answering 500")) << s.t.log();
    EXPECT_TRUE(s.still_answers());
    std::vector<pid_t> after = s.t.workers();
    EXPECT_NE(std::find(after.begin(), after.end(), before.at(0)), after.end()) << s.t.log();
    EXPECT_TRUE(s.t.log_lines("signal").empty()) << s.t.log();
}

TEST(Http, ASlowHeadGets408AndTheWorkerIsFreed) {
    HttpServer s(0.5);
    s.t.options.max_clients = 1;
    s.t.options.start_servers = 1;
    ASSERT_TRUE(s.start());
    Client slow(s.t.address());
    ASSERT_TRUE(slow.send("GET /pid HTTP/1.1\r\nHo"));
    int64_t start = harness::now_ms();
    Response r = read_response(slow, false, 5000);
    EXPECT_EQ(r.status, 408);
    EXPECT_LT(harness::now_ms() - start, 4000);
    std::string rest;
    EXPECT_TRUE(slow.until_eof(&rest, 2000));
    EXPECT_TRUE(s.still_answers()) << "the only worker stayed with the slow client";
}

// The pool is full (its one worker holds a client): a slow head, a slow
// body or a client that does not read its answer loses the worker after
// pressure_timeout, long before its own timeouts (10 s, 30 s), and the
// client waiting in the listen queue is served.
struct FullPool {
    HttpServer s{10, 10, 1 << 20};
    FullPool() {
        s.options.pressure_timeout = 0.3;
        s.rebuild();
        s.t.options.max_clients = 1;
        s.t.options.start_servers = 1;
        s.t.options.min_spare_servers = 1;
        s.t.options.max_spare_servers = 1;
    }
    // A second client is answered within 3 s while the first holds on.
    bool waiting_client_is_served() {
        int64_t start = harness::now_ms();
        bool served = s.still_answers();
        return served && harness::now_ms() - start < 3000;
    }
};

TEST(HttpPace, ASlowHeadGivesWayWhenThePoolIsFull) {
    FullPool f;
    ASSERT_TRUE(f.s.start());
    Client slow(f.s.t.address());
    ASSERT_TRUE(slow.send("GET /pid HTTP/1.1\r\nX-a: b\r\n"));
    EXPECT_TRUE(f.waiting_client_is_served()) << f.s.t.log();
    EXPECT_EQ(read_response(slow, false, 1000).status, 408);
}

TEST(HttpPace, ASlowBodyGivesWayWhenThePoolIsFull) {
    FullPool f;
    ASSERT_TRUE(f.s.start());
    Client slow(f.s.t.address());
    ASSERT_TRUE(slow.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"));
    EXPECT_TRUE(f.waiting_client_is_served()) << f.s.t.log();
    EXPECT_EQ(read_response(slow, false, 1000).status, 408);
}

TEST(HttpPace, AClientThatDoesNotReadGivesWayWhenThePoolIsFull) {
    FullPool f;
    ASSERT_TRUE(f.s.start());
    Client reader(f.s.t.address());
    ASSERT_TRUE(reader.send("GET /big HTTP/1.1\r\nHost: x\r\n\r\n"));  // 8 MiB, never read
    EXPECT_TRUE(f.waiting_client_is_served()) << f.s.t.log();
}

// A client that trickles a byte every few milliseconds is never silent for
// a tick, and is held to its pace all the same: a head to request_timeout,
// a body to min_rate.
TEST(HttpPace, ATrickleFasterThanTheTickIsStillPaced) {
    HttpServer s(0.5, 2, 1 << 20);
    s.options.min_rate = 1000;
    s.rebuild();
    ASSERT_TRUE(s.start());
    auto trickle = [&](const std::string &start, int64_t *took) {
        Client c(s.t.address());
        c.send(start);
        int64_t begin = harness::now_ms();
        while (harness::now_ms() - begin < 4000 && c.send("a")) poll(nullptr, 0, 5);
        Response r = read_response(c, false, 2000);
        *took = harness::now_ms() - begin;
        return r.status;
    };
    int64_t took;
    EXPECT_EQ(trickle("GET /pid HTTP/1.1\r\nX-long: ", &took), 408);
    EXPECT_LT(took, 3000) << "a head trickled for " << took << " ms";
    EXPECT_EQ(trickle("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n", &took), 408);
    EXPECT_LT(took, 3000) << "a body trickled at about 200 bytes/s for " << took << " ms";
    EXPECT_TRUE(s.still_answers());
}

// Not under pressure, a body may take longer than request_timeout as long
// as it keeps min_rate; one that falls below it is cut with 408.
TEST(HttpPace, ABodyKeepingTheMinimumRateMayTakeLongerThanTheTimeout) {
    HttpServer s(0.4, 2, 1 << 20);
    s.options.min_rate = 1000;
    s.rebuild();
    ASSERT_TRUE(s.start());
    auto upload = [&](size_t bytes, size_t piece, int every_ms, Response *r) {
        Client c(s.t.address());
        c.send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(bytes) + "\r\n\r\n");
        int64_t start = harness::now_ms();
        for (size_t sent = 0; sent < bytes; sent += piece) {
            if (!c.send(std::string(std::min(piece, bytes - sent), 'u'))) break;
            poll(nullptr, 0, every_ms);
        }
        *r = read_response(c, false, 3000);
        return harness::now_ms() - start;
    };
    Response steady, trickle;
    int64_t took = upload(3000, 100, 50, &steady);  // 2000 B/s for about 1.5 s
    EXPECT_EQ(steady.status, 200) << s.t.log();
    EXPECT_EQ(steady.body, std::string(3000, 'u'));
    EXPECT_GT(took, 1000);
    upload(3000, 10, 50, &trickle);  // 200 B/s
    EXPECT_EQ(trickle.status, 408);
}

TEST(Http, AnIdleKeepAliveConnectionIsClosedAfterItsTimeout) {
    HttpServer s(2, 0.3);
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    EXPECT_EQ(read_response(c).status, 200);
    std::string rest;
    EXPECT_TRUE(c.until_eof(&rest, 3000)) << "the idle connection was kept open";
    EXPECT_EQ(rest, "");
}

// With every worker taken, a worker closes its keep-alive connection after
// the current response rather than keep new clients waiting.
TEST(Http, KeepAliveGivesWayWhenThePoolIsFull) {
    HttpServer s(2, 10);
    s.t.options.max_clients = 1;
    s.t.options.start_servers = 1;
    s.t.options.min_spare_servers = 1;
    ASSERT_TRUE(s.start());
    Client first(s.t.address());
    ASSERT_TRUE(first.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = read_response(first);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.fields["connection"], "close") << "kept alive with no worker to spare";
    EXPECT_TRUE(s.still_answers());
}

// A connection already idle in keep-alive is closed once the pool fills,
// and its worker takes the new client; without that the new client would
// wait for the keep-alive timeout (10 s) or the slow head's (5 s).
TEST(Http, AnIdleKeepAliveConnectionGivesWayWhenThePoolFills) {
    HttpServer s(5, 10);
    s.t.options.max_clients = 2;
    s.t.options.start_servers = 2;
    s.t.options.min_spare_servers = 1;
    s.t.options.max_spare_servers = 2;
    ASSERT_TRUE(s.start());
    ASSERT_TRUE(s.t.wait_workers(2));
    Client kept(s.t.address());
    ASSERT_TRUE(kept.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = read_response(kept);
    ASSERT_EQ(r.status, 200);
    ASSERT_EQ(r.fields.count("connection"), 0u) << "one worker was still free: keep-alive expected";
    Client slow(s.t.address());  // takes the other worker: the pool is full
    ASSERT_TRUE(slow.send("GET /pid HTTP/1.1\r\n"));
    std::string rest;
    EXPECT_TRUE(kept.until_eof(&rest, 2000)) << "the idle keep-alive connection was kept";
    Client fresh(s.t.address());
    ASSERT_TRUE(fresh.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response answer = read_response(fresh, false, 2000);
    EXPECT_EQ(answer.status, 200) << "the new client was kept waiting";
}

// max_clients_per_ip: a third connection from an address that already
// holds two workers gets 503 at once; another address is served; once the
// first address lets a worker go it is served again.
TEST(Http, OneClientAddressHoldsAtMostItsShareOfWorkers) {
    HttpServer s(5, 5);
    s.t.options.max_clients_per_ip = 2;
    s.t.options.start_servers = 5;
    s.t.options.max_clients = 10;
    prefork::HttpService *service = s.http.get();
    s.t.refusal = [service](prefork::Worker &w, int fd) { service->refuse(w, fd); };
    ASSERT_TRUE(s.start());
    const std::string request = "GET /pid HTTP/1.1\r\nHost: x\r\n\r\n";
    const std::string once = "GET /pid HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    Client first(s.t.address()), second(s.t.address());  // kept alive: two workers held
    ASSERT_TRUE(first.send(request) && second.send(request));
    ASSERT_EQ(read_response(first).status, 200);
    ASSERT_EQ(read_response(second).status, 200);
    std::string third = raw_exchange(raw_connect(s.t.address()), once);
    EXPECT_EQ(third.compare(0, 12, "HTTP/1.1 503"), 0) << third;
    EXPECT_NE(third.find("\r\nRetry-After: 1\r\n"), std::string::npos) << third;
    std::string other = raw_exchange(raw_connect(s.t.address(), "127.0.0.2"), once);
    EXPECT_EQ(other.compare(0, 12, "HTTP/1.1 200"), 0) << "another address was refused: " << other;
    first.close();
    EXPECT_TRUE(harness::eventually([&] {
        return raw_exchange(raw_connect(s.t.address()), once).compare(0, 12, "HTTP/1.1 200") == 0;
    })) << "still refused after a worker was let go";
}

TEST(HttpPieces, ChunkedDecoderTakesAnySplit) {
    const std::string coded = "4\r\nWiki\r\n5;name=v\r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nT: v\r\n\r\n";
    for (size_t split = 0; split <= coded.size(); split++) {
        prefork::ChunkedDecoder d;
        std::string out;
        bool too_large = false;
        long a = d.feed(coded.data(), split, &out, 1000, &too_large);
        ASSERT_GE(a, 0);
        long b = d.feed(coded.data() + a, coded.size() - size_t(a), &out, 1000, &too_large);
        ASSERT_GE(b, 0);
        EXPECT_TRUE(d.done()) << split;
        EXPECT_EQ(size_t(a + b), coded.size());
        EXPECT_EQ(out, "Wikipedia in\r\n\r\nchunks.");
    }
    const char *bad[] = {"x\r\n", "\r\n", "4\r\nWikiX\r\n", "10000000000000000\r\n", "4\x01\r\n",
                         "4\nWiki\r\n", "4\r\nWiki\n", "0\r\n\n"};  // bare LFs
    for (const char *b : bad) {
        prefork::ChunkedDecoder d;
        std::string out;
        bool too_large = false;
        EXPECT_EQ(d.feed(b, strlen(b), &out, 1000, &too_large), -1) << b;
    }
    prefork::ChunkedDecoder d;
    std::string out;
    bool too_large = false;
    EXPECT_EQ(d.feed("3e9\r\n", 5, &out, 1000, &too_large), -1);
    EXPECT_TRUE(too_large);
}

TEST(HttpPieces, PercentDecodingRefusesNulAndBadEscapes) {
    std::string out;
    EXPECT_TRUE(prefork::percent_decode("/a%20b%2fc%C3%A9", &out));
    EXPECT_EQ(out, "/a b/c\xc3\xa9");
    EXPECT_FALSE(prefork::percent_decode("/a%00b", &out));
    EXPECT_FALSE(prefork::percent_decode("/a%2", &out));
    EXPECT_FALSE(prefork::percent_decode("/a%", &out));
    EXPECT_FALSE(prefork::percent_decode("/a%g0", &out));
    // Found by the fuzzer (the parser never lets one through, but the
    // function is public): a raw NUL is refused like an encoded one.
    EXPECT_FALSE(prefork::percent_decode(std::string_view("\0", 1), &out));
    EXPECT_FALSE(prefork::percent_decode(std::string_view("/a\0b", 4), &out));
}

namespace {

// A docroot with a page, a big file, a dotfile, a directory without an
// index, and symlinks that stay inside or lead out.
struct Docroot {
    std::string path;
    std::string big;
    Docroot() {
        char name[] = "/tmp/prefork-test-www-XXXXXX";
        path = mkdtemp(name);
        write("index.html", "<h1>home</h1>\n");
        write("style.css", "body{}\n");
        write(".secret", "dotfile\n");
        mkdir((path + "/sub").c_str(), 0755);
        mkdir((path + "/empty").c_str(), 0755);
        write("sub/index.html", "sub index\n");
        write("sub/.hidden", "hidden\n");
        for (int i = 0; big.size() < 300000; i++) big += std::to_string(i) + ",";
        write("big.bin", big);
        symlink("/etc/passwd", (path + "/out").c_str());
        symlink("../../../../etc/passwd", (path + "/sub/up").c_str());
        symlink("style.css", (path + "/in.css").c_str());
    }
    ~Docroot() {
        const char *names[] = {"index.html", "style.css", ".secret", "sub/index.html", "sub/.hidden",
                               "big.bin", "out", "sub/up", "in.css"};
        for (const char *n : names) unlink((path + "/" + n).c_str());
        rmdir((path + "/sub").c_str());
        rmdir((path + "/empty").c_str());
        rmdir(path.c_str());
    }
    void write(const std::string &name, const std::string &text) {
        FILE *f = fopen((path + "/" + name).c_str(), "w");
        if (!f) return;
        fwrite(text.data(), 1, text.size(), f);
        fclose(f);
    }
};

Response get(HttpServer &s, const std::string &target, const std::string &extra = "",
             const std::string &method = "GET") {
    Client c(s.t.address());
    c.send(method + " " + target + " HTTP/1.1\r\nHost: x\r\n" + extra + "\r\n");
    return read_response(c, method == "HEAD");
}

}  // namespace

TEST(HttpFiles, ServesFilesWithTypeValidatorsAndExactBytes) {
    Docroot root;
    HttpServer s;
    ASSERT_EQ(s.http->serve_directory(root.path), 0) << s.http->error();
    ASSERT_TRUE(s.start());
    Response css = get(s, "/style.css");
    EXPECT_EQ(css.status, 200);
    EXPECT_EQ(css.body, "body{}\n");
    EXPECT_EQ(css.fields["content-type"], "text/css; charset=utf-8");
    EXPECT_EQ(css.fields["accept-ranges"], "bytes");
    EXPECT_EQ(css.fields["etag"].front(), '"');
    EXPECT_EQ(css.fields["last-modified"].size(), 29u);
    Response big = get(s, "/big.bin");
    EXPECT_EQ(big.status, 200);
    EXPECT_EQ(big.fields["content-type"], "application/octet-stream");
    EXPECT_TRUE(big.body == root.big) << "sendfile sent " << big.body.size() << " of " << root.big.size();
    Response head = get(s, "/big.bin", "", "HEAD");
    EXPECT_EQ(head.fields["content-length"], std::to_string(root.big.size()));
    EXPECT_EQ(get(s, "/in.css").status, 403) << "no symlink is followed, even one that stays inside";
}

TEST(HttpFiles, DirectoriesRedirectThenServeTheirIndex) {
    Docroot root;
    HttpServer s;
    ASSERT_EQ(s.http->serve_directory(root.path), 0);
    ASSERT_TRUE(s.start());
    EXPECT_EQ(get(s, "/").body, "<h1>home</h1>\n");
    Response moved = get(s, "/sub?x=1");
    EXPECT_EQ(moved.status, 301);
    EXPECT_EQ(moved.fields["location"], "/sub/?x=1");
    Response index = get(s, "/sub/");
    EXPECT_EQ(index.body, "sub index\n");
    EXPECT_EQ(index.fields["content-type"], "text/html; charset=utf-8");
    EXPECT_EQ(get(s, "/empty/").status, 403) << "no index, and no listing";
    EXPECT_EQ(get(s, "/missing.txt").status, 404);
}

TEST(HttpFiles, NothingOutsideTheDocrootNorADotfileIsServed) {
    Docroot root;
    HttpServer s;
    ASSERT_EQ(s.http->serve_directory(root.path), 0);
    ASSERT_TRUE(s.start());
    const char *attempts[] = {
        "/../../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd", "/sub/%2e%2e/%2e%2e/etc/passwd",
        "/sub/..%2f..%2f..%2fetc/passwd", "/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd", "/..%5c..%5cetc%5cpasswd",
        "/sub%5c..%5c.secret", "/%252e%252e/etc/passwd", "/out", "/sub/up", "/.secret", "/%2esecret",
        "/sub/.hidden", "/sub/./.hidden", "//etc/passwd", "/./.secret", "/sub//../.secret",
        "http://x/../../etc/passwd", "/%c0%ae%c0%ae/etc/passwd", "/big.bin%00.txt", "//sub",
        // More of the same families: raw and encoded dot segments, encoded
        // slashes and backslashes, double and triple encoding, overlong and
        // look-alike UTF-8, NUL, symlinks (out, up, and even one that stays
        // inside), dotfiles by any spelling, absolute-form targets.
        "/sub/../../etc/passwd", "/%2e%2e%2fetc%2fpasswd", "/.%2e/etc/passwd", "/%2e./etc/passwd",
        "/sub/%2e%2e%5c%2e%2e%5cetc%5cpasswd", "/%25252e%25252e/etc/passwd", "/%c0%af..%c0%afetc/passwd",
        "/%e0%80%ae%e0%80%ae/etc/passwd", "/..%c0%af..%c0%afetc/passwd", "/%ef%bc%8e%ef%bc%8e/etc/passwd",
        "/out/", "/out%2f", "/sub/up/", "/sub/up%2f..%2f..%2fetc%2fpasswd", "/in.css", "/in.css/../out",
        "/.%73ecret", "/%2Esecret", "/sub/%2ehidden", "/.secret/", "/sub/.hidden%00", "/%00/etc/passwd",
        "/etc/passwd", "http://x/.secret", "http://x/%2e%2e/etc/passwd", "https://x/../etc/passwd",
        "/sub/../.secret", "/sub/.", "/sub/..", "/.", "/..", "/%2e", "/%2e%2e", "/sub/.%2e/.secret",
        "/\\..\\etc\\passwd", "/.git/config",
    };
    ASSERT_GE(sizeof attempts / sizeof *attempts, 40u);
    for (const char *target : attempts) {
        Response r = get(s, target);
        EXPECT_TRUE(r.status == 400 || r.status == 403 || r.status == 404) << target << " -> " << r.status;
        EXPECT_EQ(r.body.find("root:"), std::string::npos) << target;
        EXPECT_EQ(r.body.find("dotfile"), std::string::npos) << target;
        EXPECT_EQ(r.body.find("hidden"), std::string::npos) << target;
    }
    EXPECT_TRUE(s.still_answers());
}

// No request can put a line of its own into a response head: not through
// the redirect's Location (built from the path and query as sent), not by
// encoded or raw CR LF in the target.
TEST(HttpFiles, NoRequestCanSplitAResponse) {
    Docroot root;
    HttpServer s;
    ASSERT_EQ(s.http->serve_directory(root.path), 0);
    ASSERT_TRUE(s.start());
    struct Case { std::string target; int status; };
    const Case cases[] = {
        {"/sub?x%0d%0aSet-Cookie:%20evil=1", 301},
        {"/sub%0d%0aSet-Cookie:%20evil=1", 404},
        {"/sub%0aSet-Cookie:%20evil=1/", 404},
        {"/sub\r\nSet-Cookie: evil=1", 400},
        {"/sub\nSet-Cookie: evil=1", 400},
    };
    for (const Case &k : cases) {
        std::string answer = raw_exchange(raw_connect(s.t.address()),
                                          "GET " + k.target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        EXPECT_EQ(answer.compare(0, 12, "HTTP/1.1 " + std::to_string(k.status)), 0) << k.target << ": " << answer;
        std::string head = answer.substr(0, answer.find("\r\n\r\n") + 2);  // the last field with its CRLF
        EXPECT_EQ(head.find("\nSet-Cookie"), std::string::npos) << k.target << ": " << head;
        EXPECT_EQ(head.find("\rSet-Cookie"), std::string::npos) << k.target << ": " << head;
        if (k.status == 301) {
            EXPECT_NE(head.find("\r\nLocation: /sub/?x%0d%0aSet-Cookie:%20evil=1\r\n"), std::string::npos) << head;
        }
    }
    EXPECT_TRUE(s.still_answers());
}

TEST(HttpFiles, ConditionalRequestsGet304) {
    Docroot root;
    HttpServer s;
    ASSERT_EQ(s.http->serve_directory(root.path), 0);
    ASSERT_TRUE(s.start());
    Response first = get(s, "/style.css");
    std::string etag = first.fields["etag"], modified = first.fields["last-modified"];
    Response same = get(s, "/style.css", "If-None-Match: \"zzz\", " + etag + "\r\n");
    EXPECT_EQ(same.status, 304);
    EXPECT_EQ(same.fields["etag"], etag);
    EXPECT_EQ(same.fields.count("content-length"), 0u);
    EXPECT_EQ(get(s, "/style.css", "If-None-Match: \"other\"\r\n").status, 200);
    EXPECT_EQ(get(s, "/style.css", "If-Modified-Since: " + modified + "\r\n").status, 304);
    EXPECT_EQ(get(s, "/style.css", "If-Modified-Since: Sat, 01 Jan 2000 00:00:00 GMT\r\n").status, 200);
    EXPECT_EQ(get(s, "/style.css", "If-Modified-Since: yesterday\r\n").status, 200);
    // The two obsolete forms a recipient must still read (RFC 9110 5.6.7).
    EXPECT_EQ(get(s, "/style.css", "If-Modified-Since: Thursday, 31-Dec-37 23:59:59 GMT\r\n").status, 304);
    EXPECT_EQ(get(s, "/style.css", "If-Modified-Since: Saturday, 01-Jan-00 00:00:00 GMT\r\n").status, 200);
    EXPECT_EQ(get(s, "/style.css", "If-Modified-Since: Thu Dec 31 23:59:59 2037\r\n").status, 304);
    EXPECT_EQ(get(s, "/style.css", "If-Modified-Since: Sat Jan  1 00:00:00 2000\r\n").status, 200);
}

TEST(HttpFiles, OneByteRangeIsServedOthersAreRefusedOrIgnored) {
    Docroot root;
    HttpServer s;
    ASSERT_EQ(s.http->serve_directory(root.path), 0);
    ASSERT_TRUE(s.start());
    std::string size = std::to_string(root.big.size());
    Response part = get(s, "/big.bin", "Range: bytes=10-19\r\n");
    EXPECT_EQ(part.status, 206);
    EXPECT_EQ(part.body, root.big.substr(10, 10));
    EXPECT_EQ(part.fields["content-range"], "bytes 10-19/" + size);
    Response tail = get(s, "/big.bin", "Range: bytes=-5\r\n");
    EXPECT_EQ(tail.status, 206);
    EXPECT_EQ(tail.body, root.big.substr(root.big.size() - 5));
    Response open_end = get(s, "/big.bin", "Range: bytes=299990-\r\n");
    EXPECT_EQ(open_end.body, root.big.substr(299990));
    Response beyond = get(s, "/big.bin", "Range: bytes=" + size + "-\r\n");
    EXPECT_EQ(beyond.status, 416);
    EXPECT_EQ(beyond.fields["content-range"], "bytes */" + size);
    EXPECT_EQ(get(s, "/big.bin", "Range: bytes=0-1,5-6\r\n").status, 200) << "several ranges: ignored";
    EXPECT_EQ(get(s, "/big.bin", "Range: lines=1-2\r\n").status, 200);
    EXPECT_EQ(get(s, "/big.bin", "Range: Bytes=0-0\r\n").status, 206) << "the unit is case-insensitive";
    Response plain = get(s, "/big.bin", "Range: bytes=0-0\r\n");
    EXPECT_EQ(get(s, "/big.bin", "Range: bytes=0-0\r\nIf-Range: " + plain.fields["etag"] + "\r\n").status, 206);
    EXPECT_EQ(get(s, "/big.bin", "Range: bytes=0-0\r\nIf-Range: \"changed\"\r\n").status, 200)
        << "a range for another version of the file is not served";
}

TEST(HttpFiles, OtherMethodsOnAFileGet405) {
    Docroot root;
    HttpServer s;
    ASSERT_EQ(s.http->serve_directory(root.path), 0);
    ASSERT_TRUE(s.start());
    Response r = get(s, "/style.css", "Content-Length: 0\r\n", "PUT");
    EXPECT_EQ(r.status, 405);
    EXPECT_EQ(r.fields["allow"], "GET, HEAD");
    prefork::HttpService other;
    EXPECT_EQ(other.serve_directory("/no/such/dir"), -1);
    EXPECT_EQ(other.error(), "cannot serve /no/such/dir: No such file or directory");
}

TEST(HttpStatus, AddressRangesParseAndMatch) {
    prefork::AddressRange r;
    for (const char *bad : {"", "localhost", "10.0.0.0/33", "10.0.0.0/", "10.0.0.0/-1", "10.0.0.0/8x",
                            "::1/129", "1.2.3", "10.0.0.0/0008"})
        EXPECT_FALSE(prefork::AddressRange::parse(bad, &r)) << bad;
    auto v4 = [](const char *text) {
        sockaddr_in a{};
        a.sin_family = AF_INET;
        inet_pton(AF_INET, text, &a.sin_addr);
        return a;
    };
    auto v6 = [](const char *text) {
        sockaddr_in6 a{};
        a.sin6_family = AF_INET6;
        inet_pton(AF_INET6, text, &a.sin6_addr);
        return a;
    };
    auto in = [](const prefork::AddressRange &range, const auto &a) {
        return range.contains(reinterpret_cast<const sockaddr *>(&a), sizeof a);
    };
    ASSERT_TRUE(prefork::AddressRange::parse("127.0.0.0/8", &r));
    EXPECT_TRUE(in(r, v4("127.0.0.1")));
    EXPECT_TRUE(in(r, v4("127.255.255.254")));
    EXPECT_FALSE(in(r, v4("128.0.0.1")));
    EXPECT_FALSE(in(r, v4("10.0.0.1")));
    EXPECT_TRUE(in(r, v6("::ffff:127.0.0.9"))) << "an IPv4-mapped client is its IPv4 address";
    EXPECT_FALSE(in(r, v6("::1"))) << "families differ";
    ASSERT_TRUE(prefork::AddressRange::parse("192.168.1.128/25", &r));
    EXPECT_TRUE(in(r, v4("192.168.1.200")));
    EXPECT_FALSE(in(r, v4("192.168.1.127")));
    ASSERT_TRUE(prefork::AddressRange::parse("10.1.2.3", &r));
    EXPECT_TRUE(in(r, v4("10.1.2.3")));
    EXPECT_FALSE(in(r, v4("10.1.2.4")));
    ASSERT_TRUE(prefork::AddressRange::parse("0.0.0.0/0", &r));
    EXPECT_TRUE(in(r, v4("203.0.113.7")));
    ASSERT_TRUE(prefork::AddressRange::parse("2001:db8::/32", &r));
    EXPECT_TRUE(in(r, v6("2001:db8:ffff::1")));
    EXPECT_FALSE(in(r, v6("2001:db9::1")));
    ASSERT_TRUE(prefork::AddressRange::parse("::1", &r));
    EXPECT_TRUE(in(r, v6("::1")));
    EXPECT_FALSE(in(r, v6("::2")));
}

// By default only loopback clients see the status page; an allow list
// replaces that. 127.0.0.2 is loopback too, which lets one machine play
// both an allowed and a refused client.
TEST(HttpStatus, OnlyAllowedClientsSeeThePage) {
    HttpServer s;
    prefork::AddressRange only;
    ASSERT_TRUE(prefork::AddressRange::parse("127.0.0.2/32", &only));
    ASSERT_EQ(s.http->serve_status("/default"), 0);
    ASSERT_EQ(s.http->serve_status("/listed", {only}), 0);
    ASSERT_TRUE(s.start());
    const std::string ask = " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    EXPECT_EQ(raw_exchange(raw_connect(s.t.address()), "GET /default?auto" + ask).compare(0, 12, "HTTP/1.1 200"), 0);
    std::string refused = raw_exchange(raw_connect(s.t.address()), "GET /listed?auto" + ask);
    EXPECT_EQ(refused.compare(0, 12, "HTTP/1.1 403"), 0) << refused;
    EXPECT_EQ(refused.find("Scoreboard"), std::string::npos);
    int from_listed = raw_connect(s.t.address(), "127.0.0.2");
    ASSERT_GE(from_listed, 0) << "cannot connect from 127.0.0.2";
    std::string allowed = raw_exchange(from_listed, "GET /listed?auto" + ask);
    EXPECT_EQ(allowed.compare(0, 12, "HTTP/1.1 200"), 0) << allowed;
    EXPECT_NE(allowed.find("Scoreboard: "), std::string::npos);
}

TEST(HttpStatus, AutoIsApacheModStatusFormat) {
    HttpServer s;
    s.t.options.start_servers = 2;
    s.t.options.max_clients = 6;
    ASSERT_EQ(s.http->serve_status("/server-status"), 0);
    ASSERT_TRUE(s.start());
    for (int i = 0; i < 3; i++) ASSERT_EQ(get(s, "/pid").status, 200);
    // The worker of the last request may still be seeing its client leave.
    Response r;
    EXPECT_TRUE(harness::eventually([&] {
        r = get(s, "/server-status?auto");
        return r.body.find("IdleWorkers: 0\n") == std::string::npos &&
               r.body.find("BusyWorkers: 1\n") != std::string::npos;
    })) << r.body;
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.fields["content-type"], "text/plain; charset=utf-8");
    std::map<std::string, std::string> keys;
    std::istringstream lines(r.body);
    std::string line;
    std::getline(lines, line);
    EXPECT_EQ(line, "x") << "the first line names the host";
    while (std::getline(lines, line)) {
        size_t colon = line.find(": ");
        ASSERT_NE(colon, std::string::npos) << line;
        keys[line.substr(0, colon)] = line.substr(colon + 2);
    }
    EXPECT_EQ(keys["ServerMPM"], "prefork");
    EXPECT_GE(atoi(keys["Total Accesses"].c_str()), 3) << r.body;
    EXPECT_EQ(keys["BusyWorkers"], "1") << "the worker answering is busy";
    EXPECT_GE(atoi(keys["IdleWorkers"].c_str()), 1);
    EXPECT_FALSE(keys["Total kBytes"].empty());
    EXPECT_FALSE(keys["Uptime"].empty());
    EXPECT_NE(keys["ReqPerSec"].find_first_of("0123456789"), std::string::npos);
    EXPECT_EQ(keys["Scoreboard"].size(), 6u) << "one letter per slot";
    EXPECT_EQ(keys["Scoreboard"].find_first_not_of("_SRWKG."), std::string::npos) << keys["Scoreboard"];
    EXPECT_NE(keys["Scoreboard"].find('W'), std::string::npos) << keys["Scoreboard"];
}

TEST(HttpStatus, HtmlAndJsonListTheWorkersAndEscapeWhatClientsSent) {
    HttpServer s;
    s.t.options.start_servers = 1;
    s.t.options.min_spare_servers = 1;
    s.t.options.max_clients = 1;
    ASSERT_EQ(s.http->serve_status("/status"), 0);
    ASSERT_TRUE(s.start());
    EXPECT_EQ(get(s, "/<b>\"x\"").status, 404);
    // The page shows the request in hand; this one carries markup.
    Response html = get(s, "/status?<b>\"x\"");
    EXPECT_EQ(html.fields["content-type"], "text/html; charset=utf-8");
    EXPECT_NE(html.body.find("GET /status?&lt;b&gt;&quot;x&quot; HTTP/1.1"), std::string::npos) << html.body;
    EXPECT_EQ(html.body.find("<b>"), std::string::npos);
    Response json = get(s, "/status?json");
    EXPECT_EQ(json.fields["content-type"], "application/json");
    EXPECT_NE(json.body.find("\"total_accesses\":2"), std::string::npos) << json.body;
    EXPECT_NE(json.body.find("\"last_request\":\"GET /status?json HTTP/1.1\""), std::string::npos) << json.body;
    EXPECT_EQ(get(s, "/status.x").status, 404) << "the path is matched exactly";
}

// A body bigger than the input buffer's first capacity makes it grow; the
// request's views (method, target, fields) must still be right afterwards.
TEST(Http, ABigBodyArrivingInPiecesKeepsTheRequestIntact) {
    HttpServer s(5, 2, 1 << 20);
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    std::string body(200000, 'b');
    ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: x\r\nUser-Agent: big\r\nContent-Length: " +
                       std::to_string(body.size()) + "\r\n\r\n"));
    for (size_t at = 0; at < body.size(); at += 20000) {
        ASSERT_TRUE(c.send(body.substr(at, 20000)));
        poll(nullptr, 0, 2);  // let each piece arrive on its own (pacing, not synchronisation)
    }
    Response r = read_response(c);
    EXPECT_EQ(r.status, 200);
    EXPECT_TRUE(r.body == body) << r.body.size();
    EXPECT_EQ(r.fields["content-type"], "application/octet-stream") << "the handler's view of the request is wrong";
}

// Trailers, extensions and chunk sizes are not body, but they are bytes a
// worker must hold: an endless trailer section is cut off with 413.
TEST(Http, AnEndlessChunkedTrailerIsRefused) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"));
    std::string trailers;
    for (int i = 0; i < 20000; i++) trailers += "a: b\r\n";  // 120 KB, over max_body + 64 KiB
    c.send(trailers);
    Response r = read_response(c);
    EXPECT_EQ(r.status, 413);
    EXPECT_TRUE(s.still_answers());
}

// Issue 12: a capture per group, always; an unmatched group is empty.
TEST(HttpRoutes, EveryGroupHasACaptureEvenAnEmptyOne) {
    HttpServer s;
    ASSERT_EQ(s.http->route("GET", "^/m(a)?(b)$", [](prefork::HttpContext &c, prefork::HttpResponse &r) {
        r.body(std::to_string(c.captures.size()) + "[" + std::string(c.captures.at(0)) + "][" +
               std::string(c.captures.at(1)) + "]");
    }), 0);
    ASSERT_TRUE(s.start());
    EXPECT_EQ(get(s, "/mb").body, "2[][b]");
    EXPECT_EQ(get(s, "/mab").body, "2[a][b]");
}

TEST(HttpRoutes, ALowercaseOrEmptyMethodANullHandlerAndTenGroupsAreRefused) {
    prefork::HttpService http;
    auto h = [](prefork::HttpContext &, prefork::HttpResponse &) {};
    EXPECT_EQ(http.route("get", "^/x$", h), -1);
    EXPECT_NE(http.error().find("uppercase"), std::string::npos) << http.error();
    EXPECT_EQ(http.route("", "^/x$", h), -1);
    EXPECT_EQ(http.route("G T", "^/x$", h), -1);
    EXPECT_EQ(http.route("GET", "^/x$", prefork::HttpHandler()), -1);
    EXPECT_NE(http.error().find("no handler"), std::string::npos) << http.error();
    EXPECT_EQ(http.route("GET", "^/(a)(b)(c)(d)(e)(f)(g)(h)(i)(j)$", h), -1);
    EXPECT_EQ(http.route("GET", "^/(a)(b)(c)(d)(e)(f)(g)(h)(i)$", h), 0);
    EXPECT_EQ(http.route("*", "^/y$", h), 0);
    EXPECT_EQ(http.route("M-SEARCH", "^/z$", h), 0);
}

// The framing is the responder's: a handler cannot add a second
// Content-Length, a Transfer-Encoding or Connection; its Date and Server
// replace the responder's, once.
TEST(HttpResponses, AHandlerCannotSetTheFramingAndReplacesDateAndServer) {
    HttpServer s;
    ASSERT_EQ(s.http->route("GET", "^/framing$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        std::string refused;
        for (const char *name : {"Content-Length", "content-length", "Transfer-Encoding", "TRANSFER-ENCODING",
                                 "Connection", "connection"})
            if (!r.header(name, "5")) refused += "x";
        bool date = r.header("Date", "Sun, 06 Nov 1994 08:49:37 GMT");
        bool again = r.header("date", "Mon, 07 Nov 1994 08:49:37 GMT");
        bool server = r.header("Server", "mine/1.0.0");
        r.body(refused + (date ? "D" : "-") + (again ? "D" : "-") + (server ? "S" : "-"));
    }), 0);
    ASSERT_TRUE(s.start());
    std::string answer = raw_exchange(raw_connect(s.t.address()),
                                      "GET /framing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    std::string head = answer.substr(0, answer.find("\r\n\r\n") + 2);
    EXPECT_EQ(answer.substr(answer.find("\r\n\r\n") + 4), "xxxxxxD-S") << answer;
    auto count = [&](const std::string &field) {
        size_t n = 0;
        for (size_t at = head.find(field); at != std::string::npos; at = head.find(field, at + 1)) n++;
        return n;
    };
    EXPECT_EQ(count("\r\nContent-Length: "), 1u) << head;
    EXPECT_EQ(count("\r\nTransfer-Encoding"), 0u) << head;
    EXPECT_EQ(count("\r\nConnection: "), 1u) << head;
    EXPECT_EQ(count("\r\nDate: "), 1u) << head;
    EXPECT_EQ(count("\r\nServer: "), 1u) << head;
    EXPECT_NE(head.find("\r\nDate: Sun, 06 Nov 1994 08:49:37 GMT\r\n"), std::string::npos) << head;
    EXPECT_NE(head.find("\r\nServer: mine/1.0.0\r\n"), std::string::npos) << head;
}

TEST(HttpResponses, EveryRfc9110StatusHasItsReasonAndABadStatusIsA500) {
    struct Case { int status; const char *reason; };
    const Case cases[] = {{202, "Accepted"}, {303, "See Other"}, {307, "Temporary Redirect"},
                          {308, "Permanent Redirect"}, {401, "Unauthorized"}, {409, "Conflict"}, {410, "Gone"},
                          {415, "Unsupported Media Type"}, {422, "Unprocessable Content"},
                          {429, "Too Many Requests"}, {502, "Bad Gateway"}, {504, "Gateway Timeout"},
                          {200, "OK"}, {404, "Not Found"}, {505, "HTTP Version Not Supported"}};
    for (const Case &k : cases) EXPECT_STREQ(prefork::http_reason(k.status), k.reason) << k.status;
    EXPECT_STREQ(prefork::http_reason(99), "");
    EXPECT_STREQ(prefork::http_reason(600), "");
    EXPECT_STREQ(prefork::http_reason(299), "");
    HttpServer s;
    ASSERT_EQ(s.http->route("GET", "^/status/([0-9-]+)$", [](prefork::HttpContext &c, prefork::HttpResponse &r) {
        r.status(atoi(std::string(c.captures.at(0)).c_str()));
        r.body("x");
    }), 0);
    ASSERT_TRUE(s.start());
    EXPECT_EQ(get(s, "/status/429").status, 429);
    for (const char *bad : {"/status/600", "/status/99", "/status/-1", "/status/0"}) {
        Response r = get(s, bad);
        EXPECT_EQ(r.status, 500) << bad;
    }
    EXPECT_TRUE(s.t.wait_log("set the bad status: 600; answering 500")) << s.t.log();
}

// RFC 9110 section 9.3.7: "OPTIONS *" asks about the server.
TEST(HttpRoutes, OptionsAsteriskIsAnsweredWithAllow) {
    HttpServer s;
    ASSERT_TRUE(s.start());
    std::string answer =
        raw_exchange(raw_connect(s.t.address()), "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(answer.compare(0, 12, "HTTP/1.1 204"), 0) << answer;
    EXPECT_NE(answer.find("\r\nAllow: GET, HEAD"), std::string::npos) << answer;
}

// The ?auto page's ServerVersion reads Product/X.Y.Z (apache_exporter
// splits it so), and the lines collectd's apache plugin reads are there.
TEST(HttpStatus, AutoServerVersionIsProductSlashVersion) {
    HttpServer s;
    s.options.server_name = "prefork-httpd/0.1.0";
    s.rebuild();
    ASSERT_EQ(s.http->serve_status("/server-status"), 0);
    ASSERT_TRUE(s.start());
    Response r = get(s, "/server-status?auto");
    ASSERT_EQ(r.status, 200);
    // ^ServerVersion: [A-Za-z0-9_-]+/[0-9]+\.[0-9]+\.[0-9]+ (no <regex>: GCC warns inside it under ASan)
    size_t at = r.body.find("\nServerVersion: ");
    ASSERT_NE(at, std::string::npos) << r.body;
    std::string version = r.body.substr(at + 16, r.body.find('\n', at + 1) - at - 16);
    size_t slash = version.find('/');
    ASSERT_NE(slash, std::string::npos) << version;
    EXPECT_GT(slash, 0u) << version;
    for (char ch : version.substr(0, slash)) EXPECT_TRUE(isalnum((unsigned char)ch) || ch == '_' || ch == '-') << version;
    unsigned major = 0, minor = 0, patch = 0;
    int used = 0;
    EXPECT_EQ(sscanf(version.c_str() + slash + 1, "%u.%u.%u%n", &major, &minor, &patch, &used), 3) << version;
    EXPECT_TRUE(used > 0 && isdigit((unsigned char)version[slash + 1])) << version;
    for (const char *key : {"\nTotal Accesses: ", "\nTotal kBytes: ", "\nBusyWorkers: ", "\nIdleWorkers: ",
                            "\nScoreboard: ", "\nUptime: ", "\nReqPerSec: ", "\nBytesPerSec: ", "\nBytesPerReq: "})
        EXPECT_NE(r.body.find(key), std::string::npos) << key << r.body;
}

// A dot segment is refused with 400, never a misleading 404 nor a climb
// out of the docroot; "*" is OPTIONS' alone.
TEST(HttpFiles, DotSegmentsAre400AndAsteriskIsOptionsOnly) {
    Docroot root;
    HttpServer s;
    ASSERT_EQ(s.http->serve_directory(root.path), 0);
    ASSERT_TRUE(s.start());
    for (const char *target : {"/sub/../index.html", "/./index.html", "/sub/.", "/sub/..", "/..", "/../x",
                               "/sub/%2e%2e/index.html", "/sub/%2E/index.html", "/a/..%2fb", "/%2e",
                               "http://x/sub/../index.html"})
        EXPECT_EQ(get(s, target).status, 400) << target;
    EXPECT_EQ(get(s, "/index.html").status, 200);
    EXPECT_EQ(get(s, "/sub/...").status, 404) << "three dots are a name, not a dot segment";
    EXPECT_EQ(get(s, "/sub/..x").status, 404);
    EXPECT_EQ(get(s, "*").status, 400) << "GET * is not a request";
}

// A pipe has no length to promise: file() on one is a 500 and the route is
// logged (before, the head promised 5 bytes and none followed).
TEST(HttpResponses, AFileThatIsNotARegularFileIsA500) {
    int fds[2];
    ASSERT_EQ(pipe(fds), 0);
    HttpServer s;
    int read_end = fds[0];
    ASSERT_EQ(s.http->route("GET", "^/pipe$", [read_end](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.file(dup(read_end), 0, 5);
    }), 0);
    ASSERT_TRUE(s.start());
    Response r = get(s, "/pipe");
    EXPECT_EQ(r.status, 500);
    EXPECT_TRUE(s.t.wait_log("route GET ^/pipe$ gave a file that is not a regular file; answering 500")) << s.t.log();
    EXPECT_TRUE(s.still_answers());
    close(fds[0]);
    close(fds[1]);
}

// Query parameters are form-decoded ("+" a space, "%2B" a plus), the first
// of a name wins, a bare name is present and empty, and a pair that does
// not decode is as if absent.
TEST(HttpContexts, ParamFindsTheFirstFormDecodedValueAndTellsAbsentFromEmpty) {
    HttpServer s;
    ASSERT_EQ(s.http->route("GET", "^/param$", [](prefork::HttpContext &c, prefork::HttpResponse &r) {
        std::string value = "stale";
        for (const char *name : {"a", "b c", "empty", "bare", "bad", "missing", "x"}) {
            bool found = c.param(name, &value);
            r.body(std::string(name) + (found ? "=[" + value + "]" : (value.empty() ? " absent" : " stale")) + "\n");
        }
    }), 0);
    ASSERT_TRUE(s.start());
    Response r = get(s, "/param?a=1+2%2B3&b+c=%41&a=second&empty=&bare&bad=%zz&x=%00&x=later");
    ASSERT_EQ(r.status, 200);
    EXPECT_EQ(r.body, "a=[1 2+3]\nb c=[A]\nempty=[]\nbare=[]\nbad absent\nmissing absent\nx=[later]\n");
    r = get(s, "/param");
    EXPECT_EQ(r.body, "a absent\nb c absent\nempty absent\nbare absent\nbad absent\nmissing absent\nx absent\n");
}

// c.peer() is the client's address without port or brackets, "unix" over
// a UNIX socket.
TEST(HttpContexts, PeerIsTheClientsAddressAsText) {
    for (std::string spec : {std::string("127.0.0.1:0"), "unix:/tmp/http_test_peer." + std::to_string(getpid())}) {
        HttpServer s;
        s.t.listen_specs = {spec};
        ASSERT_EQ(s.http->route("GET", "^/peer$", [](prefork::HttpContext &c, prefork::HttpResponse &r) {
            r.body("[" + c.peer() + "]");
        }), 0);
        ASSERT_TRUE(s.start());
        EXPECT_EQ(get(s, "/peer").body, spec[0] == 'u' ? "[unix]" : "[127.0.0.1]") << spec;
    }
}

/* Streaming responses (HttpResponse::write). */
namespace {

// Reads a chunked body: the chunks' data into *body; true once the last
// chunk and the empty trailer came, false if the connection ended first.
bool read_chunks(Client &c, std::string *body, std::vector<std::string> *chunks = nullptr, int timeout_ms = 5000) {
    for (;;) {
        std::string size_line = c.line(timeout_ms);
        if (size_line.empty()) return false;
        size_t size = strtoul(size_line.c_str(), nullptr, 16);
        if (size == 0) return c.line(timeout_ms) == "\r";
        std::string data = c.bytes(size, timeout_ms);
        if (data.size() != size || c.line(timeout_ms) != "\r") return false;
        if (chunks) chunks->push_back(data);
        *body += data;
    }
}

// A handler's wait on the test: polls for the file every 2 ms, 5 s at most.
bool wait_for_file(const std::string &path) {
    return harness::eventually([&] { return access(path.c_str(), F_OK) == 0; }, 5000);
}

struct StreamServer : HttpServer {
    std::string gate;  // the "go on" file the /stream handler waits for
    StreamServer() {
        char name[] = "/tmp/prefork-test-stream-XXXXXX";
        gate = std::string(mkdtemp(name)) + "/go";
        std::string go = gate;
        http->route("GET", "^/stream$", [go](prefork::HttpContext &, prefork::HttpResponse &r) {
            r.header("Content-Type", "text/x-stream");
            r.body("fi");
            if (!r.write("rst")) return;
            wait_for_file(go);
            r.write("second");
            r.body("!");
        });
    }
    ~StreamServer() {
        unlink(gate.c_str());
        rmdir(gate.substr(0, gate.size() - 3).c_str());
    }
};

}  // namespace

// The head and each write leave at once, as chunks; the last chunk ends the
// response, and the connection goes on to the next request.
TEST(HttpStream, EachWriteLeavesAtOnceAsAChunkAndTheConnectionStaysOpen) {
    StreamServer s;
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = read_response(c);
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.status, 200);
    EXPECT_EQ(r.fields["transfer-encoding"], "chunked");
    EXPECT_EQ(r.fields.count("content-length"), 0u);
    EXPECT_EQ(r.fields["content-type"], "text/x-stream");
    // The first chunk comes while the handler still waits for the gate.
    EXPECT_EQ(c.line(), "5\r");
    EXPECT_EQ(c.bytes(7), "first\r\n");
    int fd = open(s.gate.c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    close(fd);
    std::string body;
    std::vector<std::string> chunks;
    EXPECT_TRUE(read_chunks(c, &body, &chunks));
    EXPECT_EQ(chunks, (std::vector<std::string>{"second", "!"}));
    ASSERT_TRUE(c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response next = read_response(c);
    EXPECT_TRUE(next.ok && next.status == 200);
}

// HTTP/1.0 has no chunks: the body ends with the connection. HEAD gets the
// head a GET would, and no body; the connection goes on. curl reads both.
TEST(HttpStream, Http10EndsAtTheCloseAndHeadGetsTheHeadAlone) {
    StreamServer s;
    int fd = open(s.gate.c_str(), O_CREAT | O_WRONLY, 0600);
    ASSERT_GE(fd, 0);
    close(fd);
    ASSERT_TRUE(s.start());
    {
        Client c(s.t.address());
        ASSERT_TRUE(c.send("GET /stream HTTP/1.0\r\n\r\n"));
        std::string all;
        ASSERT_TRUE(c.until_eof(&all));
        EXPECT_EQ(all.find("Transfer-Encoding"), std::string::npos) << all;
        EXPECT_EQ(all.find("Content-Length"), std::string::npos) << all;
        EXPECT_NE(all.find("Connection: close\r\n"), std::string::npos) << all;
        EXPECT_EQ(all.substr(all.find("\r\n\r\n") + 4), "firstsecond!");
    }
    Client c(s.t.address());
    ASSERT_TRUE(c.send("HEAD /stream HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = read_response(c, true);
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.fields["transfer-encoding"], "chunked");
    ASSERT_TRUE(c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response next = read_response(c);
    EXPECT_TRUE(next.ok && next.status == 200) << next.body;
    if (system("command -v curl >/dev/null 2>&1") != 0) GTEST_SKIP() << "curl is not installed";
    for (const char *version : {"", "-0 "}) {
        std::string command = "curl -s " + std::string(version) + "http://" + s.t.address() + "/stream";
        FILE *p = popen(command.c_str(), "r");
        ASSERT_NE(p, nullptr);
        char out[256] = {};
        size_t n = fread(out, 1, sizeof out - 1, p);
        EXPECT_EQ(pclose(p), 0) << command;
        EXPECT_EQ(std::string(out, n), "firstsecond!") << command;
    }
}

// A client that stops reading cuts the stream after send_timeout; the
// handler sees write() return false, and the worker goes on.
TEST(HttpStream, AClientThatStopsReadingCutsTheStreamAfterSendTimeout) {
    HttpServer s;
    s.options.send_timeout = 0.5;
    s.rebuild();
    s.http->route("GET", "^/flood$", [](prefork::HttpContext &c, prefork::HttpResponse &r) {
        std::string block(65536, 'f');
        int64_t start = harness::now_ms();
        size_t sent = 0;
        while (sent < (size_t(256) << 20) && r.write(block)) sent += block.size();
        c.worker->log(prefork::LogLevel::info, "flood ended after %zu bytes in %lld ms", sent,
                      (long long)(harness::now_ms() - start));
    });
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /flood HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(s.t.wait_log("flood ended after", 1, 10000)) << s.t.log();
    std::string line = s.t.log_lines("flood ended after").at(0);
    long long ms = atoll(line.substr(line.find(" in ") + 4).c_str());
    EXPECT_LT(ms, 5000) << line;
    EXPECT_EQ(line.find("268435456 bytes"), std::string::npos) << line;
    EXPECT_TRUE(s.still_answers());
}

// A stream gives way to a graceful restart at once, even while its send
// waits on a client that does not read: the old worker leaves long before
// graceful_timeout, and the client never gets the last chunk.
TEST(HttpStream, AStreamGivesWayWhenTheWorkerShouldStop) {
    HttpServer s;
    s.t.options.start_servers = 1;
    s.t.options.graceful_timeout = 30;
    s.http->route("GET", "^/endless$", [](prefork::HttpContext &c, prefork::HttpResponse &r) {
        std::string block(65536, 'e');
        size_t sent = 0;
        int64_t deadline = harness::now_ms() + 20000;
        while (harness::now_ms() < deadline && r.write(block)) sent += block.size();
        c.worker->log(prefork::LogLevel::info, "endless ended after %zu bytes, stop reason %d", sent,
                      int(c.worker->stop_reason()));
    });
    ASSERT_TRUE(s.start());
    ASSERT_TRUE(s.t.wait_workers(1));
    pid_t old_worker = s.t.workers().at(0);
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /endless HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = read_response(c);
    ASSERT_TRUE(r.ok);
    EXPECT_EQ(r.fields["transfer-encoding"], "chunked");
    std::string first = c.bytes(1000);
    EXPECT_EQ(first.size(), 1000u);  // the stream is flowing; now the client stops reading
    int64_t restart = harness::now_ms();
    ASSERT_TRUE(s.t.signal(SIGHUP));
    ASSERT_TRUE(s.t.wait_log("endless ended after", 1, 10000)) << s.t.log();
    EXPECT_TRUE(harness::eventually([&] { return harness::alive({old_worker}).empty(); }, 10000));
    EXPECT_LT(harness::now_ms() - restart, 5000);
    EXPECT_NE(s.t.log_lines("endless ended after").at(0).find("stop reason 1"), std::string::npos) << s.t.log();
    std::string rest;
    c.until_eof(&rest, 10000);
    EXPECT_EQ(rest.find("\r\n0\r\n\r\n"), std::string::npos);  // cut: no last chunk
    EXPECT_TRUE(s.still_answers());
}

// Each write is a heartbeat: a stream longer than the watchdog's timeout
// runs to its end while it keeps writing.
TEST(HttpStream, WritesAreHeartbeatsForTheWatchdog) {
    HttpServer s;
    s.t.options.timeout = 1;
    s.http->route("GET", "^/slow$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        for (int i = 0; i < 25; i++) {
            int64_t next = harness::now_ms() + 100;
            if (!r.write(std::to_string(i % 10))) return;
            while (harness::now_ms() < next) poll(nullptr, 0, 5);  // work, not a wait() (a heartbeat too)
        }
    });
    ASSERT_TRUE(s.start());
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"));
    Response r = read_response(c);
    ASSERT_TRUE(r.ok);
    std::string body;
    EXPECT_TRUE(read_chunks(c, &body)) << s.t.log();
    EXPECT_EQ(body, "0123456789012345678901234");
}

// After the head, an exception or a file cuts the stream (no last chunk,
// the route logged) and status() and header() change nothing; before it, a
// bad status is still a 500, and write() refuses while a file is set.
TEST(HttpStream, AFailureAfterTheHeadCutsTheStreamAndBeforeItIsA500) {
    HttpServer s;
    s.http->route("GET", "^/throw-mid$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.write("part");
        throw std::runtime_error("midway");
    });
    s.http->route("GET", "^/late$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.write("x");
        bool late = r.header("X-Late", "1");
        r.status(404);
        r.write(late ? "accepted" : "refused");
    });
    s.http->route("GET", "^/bad-status$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.status(700);
        r.body(r.write("x") ? "written" : "refused");
    });
    s.http->route("GET", "^/file-then-write$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.file(open("/dev/null", O_RDONLY), 0, 0);
        bool written = r.write("x");
        r.file(-1, 0, 0);
        r.body(written ? "written" : "refused");
    });
    ASSERT_TRUE(s.start());
    {
        Client c(s.t.address());
        ASSERT_TRUE(c.send("GET /throw-mid HTTP/1.1\r\nHost: x\r\n\r\n"));
        Response r = read_response(c);
        ASSERT_TRUE(r.ok);
        EXPECT_EQ(r.status, 200);
        std::string body;
        EXPECT_FALSE(read_chunks(c, &body));
        EXPECT_EQ(body, "part");
        EXPECT_TRUE(s.t.wait_log("route GET ^/throw-mid$ threw: midway; the stream is cut")) << s.t.log();
    }
    {
        Client c(s.t.address());
        ASSERT_TRUE(c.send("GET /late HTTP/1.1\r\nHost: x\r\n\r\n"));
        Response r = read_response(c);
        EXPECT_EQ(r.status, 200);
        EXPECT_EQ(r.fields.count("x-late"), 0u);
        std::string body;
        EXPECT_TRUE(read_chunks(c, &body));
        EXPECT_EQ(body, "xrefused");
    }
    Response bad = get(s, "/bad-status");
    EXPECT_EQ(bad.status, 500);
    EXPECT_TRUE(s.t.wait_log("route GET ^/bad-status$ set the bad status: 700; answering 500")) << s.t.log();
    Response file = get(s, "/file-then-write");
    EXPECT_EQ(file.status, 200);
    EXPECT_EQ(file.body, "refused");
    EXPECT_TRUE(s.still_answers());
}

// A stream that flows finishes whole across a graceful restart: the stop
// only ends a send that waits on its client.
TEST(HttpStream, AFlowingStreamFinishesAcrossAGracefulRestart) {
    HttpServer s;
    s.t.options.start_servers = 1;
    s.http->route("GET", "^/ten$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        for (int i = 0; i < 10; i++) {
            if (!r.write(std::to_string(i))) return;
            int64_t next = harness::now_ms() + 100;
            while (harness::now_ms() < next) poll(nullptr, 0, 5);
        }
    });
    ASSERT_TRUE(s.start());
    ASSERT_TRUE(s.t.wait_workers(1));
    Client c(s.t.address());
    ASSERT_TRUE(c.send("GET /ten HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_TRUE(read_response(c).ok);
    EXPECT_EQ(c.line(), "1\r");
    EXPECT_EQ(c.line(), "0\r");
    ASSERT_TRUE(s.t.signal(SIGHUP));
    std::string body = "0";
    EXPECT_TRUE(read_chunks(c, &body)) << s.t.log();
    EXPECT_EQ(body, "0123456789");
}

// HEAD: write() says false once the head is out, and the response ends
// whole; abort() cuts a stream short, or is a 500 before its head;
// c.client_gone() sees a client that left.
TEST(HttpStream, HeadEndsWritesAbortCutsAndClientGoneSeesALeaver) {
    HttpServer s;
    s.http->route("GET", "^/count$", [](prefork::HttpContext &c, prefork::HttpResponse &r) {
        int writes = 0;
        while (writes < 1000 && r.write("x")) writes++;
        c.worker->log(prefork::LogLevel::info, "count wrote %d", writes);
    });
    s.http->route("GET", "^/abort-after$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.write("part");
        r.abort();
    });
    s.http->route("GET", "^/abort-before$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.body("never");
        r.abort();
    });
    s.http->route("GET", "^/watch$", [](prefork::HttpContext &c, prefork::HttpResponse &r) {
        int64_t start = harness::now_ms();
        while (!c.client_gone() && harness::now_ms() - start < 5000) poll(nullptr, 0, 10);
        c.worker->log(prefork::LogLevel::info, "watch: gone %d", int(c.client_gone()));
        r.body("late");
    });
    ASSERT_TRUE(s.start());
    {
        Client c(s.t.address());
        ASSERT_TRUE(c.send("HEAD /count HTTP/1.1\r\nHost: x\r\n\r\n"));
        Response r = read_response(c, true);
        EXPECT_EQ(r.fields["transfer-encoding"], "chunked");
        EXPECT_TRUE(s.t.wait_log("count wrote 0")) << s.t.log();
        ASSERT_TRUE(c.send("GET /pid HTTP/1.1\r\nHost: x\r\n\r\n"));
        EXPECT_EQ(read_response(c).status, 200);
    }
    {
        Client c(s.t.address());
        ASSERT_TRUE(c.send("GET /abort-after HTTP/1.1\r\nHost: x\r\n\r\n"));
        ASSERT_TRUE(read_response(c).ok);
        std::string body;
        EXPECT_FALSE(read_chunks(c, &body));
        EXPECT_EQ(body, "part");
    }
    Response before = get(s, "/abort-before");
    EXPECT_EQ(before.status, 500);
    EXPECT_EQ(before.fields["connection"], "close");
    {
        Client c(s.t.address());
        ASSERT_TRUE(c.send("GET /watch HTTP/1.1\r\nHost: x\r\n\r\n"));
    }  // the client leaves before any answer
    EXPECT_TRUE(s.t.wait_log("watch: gone 1")) << s.t.log();
}
