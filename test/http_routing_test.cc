// http_routing_test.cc - what answers a path: routes first, whatever the
// order of the calls, then the static files mounted at the longest prefix
// that holds it, else 404 (or 405 when a route matches under another
// method); and the on_error hook that renders the library's own answers.
#include "harness.h"
#include "prefork.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <string>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

using harness::Client;

namespace {

// One answer, read to the end of a Connection: close exchange.
struct Answer {
    int status = 0;
    std::string head, body;  // head: the status line and fields, CRLFs and all
    bool has(const std::string &field_line) const { return head.find("\r\n" + field_line + "\r\n") != std::string::npos; }
};

Answer send_and_read(const std::string &address, const std::string &request) {
    Client c(address);
    std::string all;
    c.send(request);
    c.until_eof(&all, 5000);
    Answer a;
    size_t end = all.find("\r\n\r\n");
    if (all.compare(0, 9, "HTTP/1.1 ") != 0 || end == std::string::npos) return a;
    a.status = atoi(all.c_str() + 9);
    a.head = all.substr(0, end + 2);
    a.body = all.substr(end + 4);
    return a;
}

Answer ask(const std::string &address, const std::string &method, const std::string &target) {
    std::string length = method == "POST" || method == "PUT" ? "Content-Length: 0\r\n" : "";
    return send_and_read(address, method + " " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n" + length + "\r\n");
}

// A scratch directory of files, removed with all it holds.
struct Files {
    std::string path;
    Files() {
        char name[] = "/tmp/prefork-routing-XXXXXX";
        path = mkdtemp(name);
    }
    ~Files() {
        std::string rm = "rm -rf " + path;
        if (system(rm.c_str()) != 0) {}
    }
    Files &add(const std::string &name, const std::string &text) {
        for (size_t slash = name.find('/'); slash != std::string::npos; slash = name.find('/', slash + 1))
            mkdir((path + "/" + name.substr(0, slash)).c_str(), 0755);
        FILE *f = fopen((path + "/" + name).c_str(), "w");
        if (f) {
            fwrite(text.data(), 1, text.size(), f);
            fclose(f);
        }
        return *this;
    }
};

void text(prefork::HttpResponse &r, const std::string &body) { r.body(body); }

// A server running an HttpService the test has set up.
struct Service {
    prefork::HttpService http;
    harness::TestServer t;
    bool start() {
        prefork::HttpService *service = &http;
        t.handler = [service](prefork::Worker &w, int fd) { service->serve(w, fd); };
        t.refusal = [service](prefork::Worker &w, int fd) { service->refuse(w, fd); };
        return t.start();
    }
    Answer get(const std::string &target) { return ask(t.address(), "GET", target); }
};

}  // namespace

TEST(HttpRouting, ARouteAddedAfterTheFilesStillAnswers) {
    Files root;
    root.add("page.txt", "a file\n").add("api/hello", "the file under the route\n");
    Service s;
    ASSERT_EQ(s.http.serve_directory(root.path), 0) << s.http.error();
    s.http.route("GET", "^/api/", [](prefork::HttpContext &, prefork::HttpResponse &r) { text(r, "route\n"); });
    s.http.route("PUT", "^/things/", [](prefork::HttpContext &, prefork::HttpResponse &r) { text(r, "put\n"); });
    ASSERT_TRUE(s.start());
    EXPECT_EQ(s.get("/api/hello").body, "route\n");
    EXPECT_EQ(s.get("/page.txt").body, "a file\n");
    EXPECT_EQ(s.get("/missing").status, 404);
    // A path a route matches under another method is 405 with that
    // route's Allow, not a missing file.
    Answer other = s.get("/things/1");
    EXPECT_EQ(other.status, 405) << other.head;
    EXPECT_TRUE(other.has("Allow: PUT")) << other.head;
    EXPECT_EQ(ask(s.t.address(), "PUT", "/things/1").body, "put\n");
    // A file, under another method than GET or HEAD: the files' own 405.
    Answer put = ask(s.t.address(), "PUT", "/page.txt");
    EXPECT_EQ(put.status, 405);
    EXPECT_TRUE(put.has("Allow: GET, HEAD")) << put.head;
    // OPTIONS * is about the routes still.
    Answer options = send_and_read(s.t.address(), "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    EXPECT_EQ(options.status, 204);
    EXPECT_TRUE(options.has("Allow: GET, HEAD, PUT")) << options.head;
}

TEST(HttpRouting, APrefixServesItsDirectoryAndNothingOutsideIt) {
    Files assets, other;
    assets.add("css/a.css", "a{}\n").add("index.html", "assets index\n");
    other.add("css/a.css", "the other directory\n");
    Service s;
    ASSERT_EQ(s.http.serve_directory("/static/", assets.path), 0) << s.http.error();
    ASSERT_TRUE(s.start());
    Answer css = s.get("/static/css/a.css");
    EXPECT_EQ(css.status, 200);
    EXPECT_EQ(css.body, "a{}\n");
    EXPECT_TRUE(css.has("Content-Type: text/css; charset=utf-8")) << css.head;
    EXPECT_EQ(s.get("/static/").body, "assets index\n");
    // Outside the prefix nothing comes from that directory.
    for (const char *outside : {"/css/a.css", "/staticcss/a.css", "/statics/css/a.css", "/", "/index.html"}) {
        Answer a = s.get(outside);
        EXPECT_EQ(a.status, 404) << outside;
        EXPECT_EQ(a.body.find("a{}"), std::string::npos) << outside;
    }
    // The containment rules hold beneath a prefix too.
    for (const char *climb : {"/static/../etc/passwd", "/static/%2e%2e/%2e%2e/etc/passwd", "/static//etc/passwd",
                              "/static/.hidden", "/static/css/..%2f..%2fa.css"}) {
        int status = s.get(climb).status;
        EXPECT_TRUE(status == 400 || status == 404) << climb << " -> " << status;
    }
}

TEST(HttpRouting, TheLongestPrefixWinsWhateverTheOrder) {
    Files top, stat, img;
    top.add("static/img/x.txt", "top\n").add("static/y.txt", "top y\n");
    stat.add("img/x.txt", "static\n").add("y.txt", "static y\n");
    img.add("x.txt", "img\n");
    Service s;
    ASSERT_EQ(s.http.serve_directory("/static/img/", img.path), 0);
    ASSERT_EQ(s.http.serve_directory(top.path), 0);
    ASSERT_EQ(s.http.serve_directory("/static/", stat.path), 0);
    ASSERT_TRUE(s.start());
    EXPECT_EQ(s.get("/static/img/x.txt").body, "img\n");
    EXPECT_EQ(s.get("/static/y.txt").body, "static y\n");
    EXPECT_EQ(s.get("/static/img/y.txt").status, 404) << "a longer prefix holds it: no falling back to a shorter";
}

TEST(HttpRouting, APrefixWithoutItsFinalSlashIsRedirected) {
    Files assets;
    assets.add("index.html", "assets index\n").add("sub/index.html", "sub\n");
    Service s;
    ASSERT_EQ(s.http.serve_directory("/static/", assets.path), 0);
    ASSERT_TRUE(s.start());
    Answer bare = s.get("/static?v=2");
    EXPECT_EQ(bare.status, 301) << bare.head;
    EXPECT_TRUE(bare.has("Location: /static/?v=2")) << bare.head;
    Answer sub = s.get("/static/sub");
    EXPECT_EQ(sub.status, 301) << sub.head;
    EXPECT_TRUE(sub.has("Location: /static/sub/")) << sub.head;
    EXPECT_EQ(s.get("/static/sub/").body, "sub\n");
}

TEST(HttpRouting, ABadOrTakenPrefixIsRefused) {
    Files assets;
    prefork::HttpService http;
    for (const char *bad : {"", "static/", "/static", "//", "/a//", "/a/../", "/./", "/.git/", "/a\\b/"}) {
        EXPECT_EQ(http.serve_directory(bad, assets.path), -1) << bad;
        EXPECT_EQ(http.error(), "cannot serve " + assets.path + " at " + bad +
                                    ": a prefix starts and ends with \"/\" and has no empty segment nor one "
                                    "starting with \".\"");
    }
    EXPECT_EQ(http.serve_directory("/static/", assets.path), 0);
    EXPECT_EQ(http.serve_directory("/static/", assets.path), -1);
    EXPECT_EQ(http.error(), "cannot serve " + assets.path + " at /static/: that prefix is served already");
    EXPECT_EQ(http.serve_directory(assets.path), 0);
    EXPECT_EQ(http.serve_directory("/", assets.path), -1);
    EXPECT_EQ(http.serve_directory("/a/b-c_d/", "/no/such/dir"), -1);
    EXPECT_EQ(http.error(), "cannot serve /no/such/dir: No such file or directory");
}

namespace {

// An on_error hook as a JSON API writes it, naming what it was given; it
// also tries to change the status, which must not take.
void render_json(const prefork::HttpContext *c, int status, prefork::HttpResponse &r) {
    r.status(299);
    r.header("Content-Type", "application/json");
    r.header("X-Rendered", "yes");
    r.body("{\"status\":" + std::to_string(status) + ",\"path\":" + (c ? "\"" + std::string(c->path) + "\"" : "null") +
           "}");
}

void serve_json_errors(Service &s, const std::string &docroot) {
    s.http.on_error(render_json);
    s.http.route("GET", "^/boom$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.body("half");
        throw std::runtime_error("thrown on purpose");
    });
    s.http.route("PUT", "^/things$", [](prefork::HttpContext &, prefork::HttpResponse &) {});
    s.http.route("GET", "^/own$", [](prefork::HttpContext &, prefork::HttpResponse &r) {
        r.status(404);
        r.body("the handler's own 404\n");
    });
    s.http.serve_directory("/files/", docroot);
}

}  // namespace

TEST(HttpErrors, TheHookRendersTheLibrarysAnswersKeepingTheirStatus) {
    Files root;
    root.add("a.txt", "a file\n");
    Service s;
    serve_json_errors(s, root.path);
    ASSERT_TRUE(s.start());
    struct Case { const char *target; int status; const char *body; };
    const Case cases[] = {
        {"/nowhere", 404, "{\"status\":404,\"path\":\"/nowhere\"}"},
        {"/things", 405, "{\"status\":405,\"path\":\"/things\"}"},
        {"/boom", 500, "{\"status\":500,\"path\":\"/boom\"}"},
        {"/files/none.txt", 404, "{\"status\":404,\"path\":\"/files/none.txt\"}"},
        {"/a/../b", 400, "{\"status\":400,\"path\":null}"},  // refused before routing: no context
    };
    for (const Case &k : cases) {
        Answer a = s.get(k.target);
        EXPECT_EQ(a.status, k.status) << k.target << ": " << a.head;
        EXPECT_EQ(a.body, k.body) << k.target;
        EXPECT_TRUE(a.has("Content-Type: application/json")) << k.target << ": " << a.head;
        EXPECT_TRUE(a.has("X-Rendered: yes")) << k.target << ": " << a.head;
        EXPECT_TRUE(a.has("Content-Length: " + std::to_string(strlen(k.body)))) << k.target << ": " << a.head;
    }
    EXPECT_TRUE(s.get("/things").has("Allow: PUT")) << "the library's fields stay";
    // A request the parser refuses: 400 before anything was routed.
    Answer bad = send_and_read(s.t.address(), "GET  / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_EQ(bad.status, 400) << bad.head;
    EXPECT_EQ(bad.body, "{\"status\":400,\"path\":null}");
    // HEAD: the same head, no body.
    Answer head = ask(s.t.address(), "HEAD", "/nowhere");
    EXPECT_EQ(head.status, 404);
    EXPECT_TRUE(head.has("Content-Length: " + std::to_string(strlen(cases[0].body)))) << head.head;
    EXPECT_TRUE(head.has("Content-Type: application/json")) << head.head;
    EXPECT_EQ(head.body, "");
}

TEST(HttpErrors, TheHookLeavesHandlersAnswersAndRedirectsAlone) {
    Files root;
    root.add("sub/index.html", "sub\n");
    Service s;
    serve_json_errors(s, root.path);
    ASSERT_TRUE(s.start());
    Answer own = s.get("/own");
    EXPECT_EQ(own.status, 404);
    EXPECT_EQ(own.body, "the handler's own 404\n");
    EXPECT_FALSE(own.has("X-Rendered: yes")) << own.head;
    Answer moved = s.get("/files/sub");
    EXPECT_EQ(moved.status, 301);
    EXPECT_EQ(moved.body, "301 Moved Permanently\n");
    EXPECT_FALSE(moved.has("X-Rendered: yes")) << moved.head;
}

TEST(HttpErrors, AHookThatThrowsFallsBackToTheDefaultBodyAndIsLogged) {
    Service s;
    s.http.on_error([](const prefork::HttpContext *, int, prefork::HttpResponse &r) {
        r.header("Content-Type", "application/json");
        r.body("{\"half\":");
        throw std::runtime_error("the renderer broke");
    });
    ASSERT_TRUE(s.start());
    Answer a = s.get("/nowhere");
    EXPECT_EQ(a.status, 404);
    EXPECT_EQ(a.body, "404 Not Found\n");
    EXPECT_TRUE(a.has("Content-Type: text/plain; charset=utf-8")) << a.head;
    EXPECT_EQ(a.head.find("application/json"), std::string::npos) << a.head;
    EXPECT_TRUE(s.t.wait_log("the error hook threw: the renderer broke; answering 404 with the default body"))
        << s.t.log();
}

// refuse()'s 503 is rendered too, Retry-After kept: a second connection from
// an address that holds its one worker already.
TEST(HttpErrors, TheHookRendersARefusal) {
    Service s;
    s.t.options.max_clients_per_ip = 1;
    s.t.options.start_servers = 3;
    s.http.on_error(render_json);
    s.http.route("GET", "^/hello$", [](prefork::HttpContext &, prefork::HttpResponse &r) { text(r, "hello\n"); });
    ASSERT_TRUE(s.start());
    Client held(s.t.address());  // kept alive: its worker stays with it
    ASSERT_TRUE(held.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n"));
    ASSERT_NE(held.line(), "");
    Answer refused;
    EXPECT_TRUE(harness::eventually([&] { return (refused = s.get("/hello")).status == 503; })) << refused.head;
    EXPECT_EQ(refused.body, "{\"status\":503,\"path\":null}");
    EXPECT_TRUE(refused.has("Retry-After: 1")) << refused.head;
    EXPECT_TRUE(refused.has("Content-Type: application/json")) << refused.head;
}

/* Access rules by client address (allow_from, deny_from). */
namespace {

// GET target from a given loopback source address; the status, 0 if the
// exchange failed.
int status_from(const std::string &address, const char *source, const std::string &target) {
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in from{}, to{};
    from.sin_family = to.sin_family = AF_INET;
    inet_pton(AF_INET, source, &from.sin_addr);
    inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
    to.sin_port = htons(uint16_t(atoi(address.substr(address.rfind(':') + 1).c_str())));
    int status = 0;
    timeval limit = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &limit, sizeof limit);
    if (bind(fd, reinterpret_cast<sockaddr *>(&from), sizeof from) == 0 &&
        connect(fd, reinterpret_cast<sockaddr *>(&to), sizeof to) == 0) {
        std::string request = "GET " + target + " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        char answer[64] = {};
        if (write(fd, request.data(), request.size()) == ssize_t(request.size()) &&
            read(fd, answer, sizeof answer - 1) > 12 && strncmp(answer, "HTTP/1.1 ", 9) == 0)
            status = atoi(answer + 9);
    }
    close(fd);
    return status;
}

prefork::AddressRange range(const char *text) {
    prefork::AddressRange r;
    EXPECT_TRUE(prefork::AddressRange::parse(text, &r)) << text;
    return r;
}

}  // namespace

// The longest prefix with rules decides; among its rules the first match
// wins; with none matching, allow rules mean "only these" and deny rules
// alone "all but these". The prefix without its "/" is covered too.
TEST(HttpAccess, TheLongestPrefixWithRulesDecidesAndItsFirstMatchWins) {
    Service s;
    s.http.route("GET", "^/", [](prefork::HttpContext &, prefork::HttpResponse &r) { text(r, "ok\n"); });
    ASSERT_EQ(s.http.allow_from("/admin/", range("127.0.0.2")), 0);
    ASSERT_EQ(s.http.deny_from("/", range("127.0.0.3/32")), 0);
    ASSERT_EQ(s.http.deny_from("/admin/open/", range("127.0.0.9")), 0);
    ASSERT_EQ(s.http.allow_from("/first/", range("127.0.0.0/8")), 0);
    ASSERT_EQ(s.http.deny_from("/first/", range("127.0.0.2")), 0);
    ASSERT_EQ(s.http.deny_from("/then/", range("127.0.0.2")), 0);
    ASSERT_EQ(s.http.allow_from("/then/", range("127.0.0.0/8")), 0);
    EXPECT_EQ(s.http.allow_from("admin/", range("127.0.0.1")), -1);
    EXPECT_NE(s.http.error().find("bad access rule prefix admin/"), std::string::npos) << s.http.error();
    EXPECT_EQ(s.http.deny_from("/a/../", range("127.0.0.1")), -1);
    ASSERT_TRUE(s.start());
    const std::string &at = s.t.address();
    EXPECT_EQ(status_from(at, "127.0.0.1", "/page"), 200);
    EXPECT_EQ(status_from(at, "127.0.0.3", "/page"), 403);
    EXPECT_EQ(status_from(at, "127.0.0.1", "/admin/"), 403);
    EXPECT_EQ(status_from(at, "127.0.0.1", "/admin"), 403);
    EXPECT_EQ(status_from(at, "127.0.0.1", "/admin/x/y"), 403);
    EXPECT_EQ(status_from(at, "127.0.0.2", "/admin/x/y"), 200);
    EXPECT_EQ(status_from(at, "127.0.0.3", "/admin/"), 403);
    EXPECT_EQ(status_from(at, "127.0.0.1", "/admin/open/x"), 200);
    EXPECT_EQ(status_from(at, "127.0.0.9", "/admin/open/x"), 403);
    EXPECT_EQ(status_from(at, "127.0.0.2", "/first/x"), 200);
    EXPECT_EQ(status_from(at, "127.0.0.2", "/then/x"), 403);
    EXPECT_EQ(status_from(at, "127.0.0.1", "/then/x"), 200);
    EXPECT_TRUE(s.t.wait_log("the access rules refuse /admin/ to 127.0.0.1")) << s.t.log();
}

// Files and CGI scripts cannot share a prefix, whichever comes first.
TEST(HttpRouting, FilesAndCgiCannotShareAPrefix) {
    Files root;
    prefork::HttpService http;
    ASSERT_EQ(http.serve_directory("/x/", root.path), 0) << http.error();
    EXPECT_EQ(http.serve_cgi("/x/", root.path), -1);
    EXPECT_NE(http.error().find("that prefix is served already"), std::string::npos) << http.error();
    ASSERT_EQ(http.serve_cgi("/y/", root.path), 0) << http.error();
    EXPECT_EQ(http.serve_directory("/y/", root.path), -1);
    EXPECT_NE(http.error().find("that prefix is served already"), std::string::npos) << http.error();
}
