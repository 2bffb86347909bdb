// http_parser_test.cc - parse_request() and check_request(): valid heads,
// each way a head can be wrong and the status it earns, and the promise that
// every prefix of a head gives "incomplete" or that same answer.
#include "prefork.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

using prefork::check_request;
using prefork::HttpHeader;
using prefork::HttpRequest;
using prefork::HttpRequestInfo;
using prefork::parse_request;

namespace {

struct Parsed {
    int rc = 0;
    int status = 0;
    HttpRequest request;
    HttpHeader headers[prefork::http_max_headers];
};

Parsed parse(const std::string &head, size_t length) {
    Parsed p;
    p.rc = parse_request(head.data(), length, &p.request, p.headers, prefork::http_max_headers,
                         &p.status);
    return p;
}

Parsed parse(const std::string &head) { return parse(head, head.size()); }

// Every strict prefix must be "incomplete" or the whole head's error.
void expect_prefixes_agree(const std::string &head) {
    Parsed whole = parse(head);
    for (size_t k = 0; k < head.size(); k++) {
        Parsed part = parse(head, k);
        if (part.rc == prefork::http_incomplete) continue;
        ASSERT_EQ(part.rc, prefork::http_malformed) << "prefix " << k << " of " << head;
        ASSERT_EQ(whole.rc, prefork::http_malformed) << "prefix " << k << " failed a valid head";
        ASSERT_EQ(part.status, whole.status) << "prefix " << k;
    }
}

std::string with_headers(int count) {
    std::string head = "GET / HTTP/1.1\r\nHost: x\r\n";
    for (int i = 1; i < count; i++) head += "X-" + std::to_string(i) + ": v\r\n";
    return head + "\r\n";
}

}  // namespace

TEST(HttpParser, ParsesAHeadIntoViews) {
    std::string head = "GET /a/b?c=d HTTP/1.1\r\nHost: example.com\r\nAccept:  */* \r\n\r\nBODY";
    Parsed p = parse(head);
    ASSERT_EQ(p.rc, int(head.size() - 4));
    EXPECT_EQ(p.request.method, "GET");
    EXPECT_EQ(p.request.target, "/a/b?c=d");
    EXPECT_EQ(p.request.minor_version, 1);
    ASSERT_EQ(p.request.header_count, 2u);
    EXPECT_EQ(p.headers[0].name, "Host");
    EXPECT_EQ(p.headers[0].value, "example.com");
    EXPECT_EQ(p.headers[1].name, "Accept");
    EXPECT_EQ(p.headers[1].value, "*/*");
    EXPECT_EQ(p.headers[1].value.data(), head.data() + head.find("*/*")) << "not a view into buf";
}

TEST(HttpParser, AcceptsWhatRfc9112Allows) {
    const char *valid[] = {
        "GET / HTTP/1.0\r\n\r\n",
        "GET / HTTP/1.1\nHost: x\n\n",                      // bare LF line ends
        "\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",            // an empty line first
        "M-SEARCH * HTTP/1.1\r\nHost: x\r\n\r\n",           // token method, asterisk form
        "GET http://x/y HTTP/1.1\r\nHost: x\r\n\r\n",       // absolute form
        "GET / HTTP/1.1\r\nHost: x\r\nX-Empty:\r\n\r\n",    // empty value
        "GET / HTTP/1.1\r\nHost: x\r\nX: caf\xc3\xa9\r\n\r\n",  // obs-text
        "GET / HTTP/1.1\r\nHost: x\r\nX: a\tb\r\n\r\n",     // HTAB inside a value
    };
    for (const char *head : valid) {
        Parsed p = parse(head);
        EXPECT_EQ(p.rc, int(strlen(head))) << head << " status " << p.status;
        expect_prefixes_agree(head);
    }
}

TEST(HttpParser, RefusesMalformedHeadsWithTheRightStatus) {
    struct Case { std::string head; int status; };
    const std::vector<Case> cases = {
        {"GET  / HTTP/1.1\r\n\r\n", 400},                 // two spaces
        {"GET / HTTP/1.1 \r\n\r\n", 400},                 // trailing space
        {"G(T / HTTP/1.1\r\n\r\n", 400},                  // not a token
        {" GET / HTTP/1.1\r\n\r\n", 400},                 // leading space
        {"GET\t/ HTTP/1.1\r\n\r\n", 400},
        {"GET  HTTP/1.1\r\n\r\n", 400},                   // no target
        {"GET /a\x01 HTTP/1.1\r\n\r\n", 400},             // control byte in target
        {std::string("GET /a\0b HTTP/1.1\r\n\r\n", 22), 400},
        {"GET / HTTX/1.1\r\n\r\n", 400},
        {"GET / http/1.1\r\n\r\n", 400},
        {"GET / HTTP/1.1x\r\n\r\n", 400},
        {"GET / HTTP/1.1\rX\n\r\n", 400},                 // lone CR
        {"GET / HTTP/2.0\r\n\r\n", 505},
        {"GET / HTTP/1.2\r\n\r\n", 505},
        {"GET / HTTP/0.9\r\n\r\n", 505},
        {"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400},      // space before the colon
        {"GET / HTTP/1.1\r\nHost\t: x\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400},   // obs-fold
        {"GET / HTTP/1.1\r\nHost: x\r\n\tfolded\r\n\r\n", 400},
        {std::string("GET / HTTP/1.1\r\nX: a\0b\r\n\r\n", 27), 400},  // NUL in a value
        {"GET / HTTP/1.1\r\nX: a\x01z\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX: a\x7f\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nX\x7f: a\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n: a\r\n\r\n", 400},           // empty name
        {"GET / HTTP/1.1\r\nX-no-colon\r\n\r\n", 400},
        {"\r\n\r\n\r\n\r\n\r\nGET / HTTP/1.1\r\n\r\n", 400},  // too many empty lines
        {std::string(33, 'A') + " / HTTP/1.1\r\n\r\n", 400},  // method over 32
        {"GET /" + std::string(8192, 'a') + " HTTP/1.1\r\n\r\n", 414},
        {with_headers(101), 431},
        {"GET / HTTP/1.1\r\nX: " + std::string(16384, 'v') + "\r\n\r\n", 431},
    };
    for (const Case &c : cases) {
        Parsed p = parse(c.head);
        EXPECT_EQ(p.rc, prefork::http_malformed) << c.head.substr(0, 80);
        EXPECT_EQ(p.status, c.status) << c.head.substr(0, 80);
        expect_prefixes_agree(c.head);
    }
}

TEST(HttpParser, LimitsAreInclusive) {
    std::string longest = "GET /" + std::string(8191, 'a') + " HTTP/1.1\r\nHost: x\r\n\r\n";
    EXPECT_EQ(parse(longest).rc, int(longest.size()));
    std::string most = with_headers(100);
    Parsed p = parse(most);
    EXPECT_EQ(p.rc, int(most.size()));
    EXPECT_EQ(p.request.header_count, 100u);
    std::string big = "GET / HTTP/1.1\r\nX: " + std::string(16384 - 7, 'v') + "\r\n\r\n";
    EXPECT_EQ(parse(big).rc, int(big.size())) << "a 16 KiB header block is allowed";
}

// Over a limit, the answer comes before the rest of the head does: a client
// cannot make a worker buffer without bound by never finishing its head.
TEST(HttpParser, LimitsAnswerBeforeTheHeadIsComplete) {
    std::string target = "GET /" + std::string(9000, 'a');
    Parsed t = parse(target);
    EXPECT_EQ(t.rc, prefork::http_malformed);
    EXPECT_EQ(t.status, 414);
    std::string block = "GET / HTTP/1.1\r\nX: " + std::string(17000, 'v');
    Parsed b = parse(block);
    EXPECT_EQ(b.rc, prefork::http_malformed);
    EXPECT_EQ(b.status, 431);
}

namespace {

struct Checked {
    int rc = 0;
    int status = 0;
    HttpRequestInfo info;
};

Checked check(const std::string &head) {
    Parsed p = parse(head);
    Checked c;
    if (p.rc < 0) {
        ADD_FAILURE() << "does not parse: " << head;
        return c;
    }
    c.rc = check_request(p.request, &c.info, &c.status);
    return c;
}

}  // namespace

TEST(HttpCheck, HostIsRequiredOnceIn11AndMustBeWellFormed) {
    EXPECT_EQ(check("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n").rc, 0);
    EXPECT_EQ(check("GET / HTTP/1.1\r\nHost: example.com:8080\r\n\r\n").rc, 0);
    EXPECT_EQ(check("GET / HTTP/1.1\r\nHost: [::1]:80\r\n\r\n").rc, 0);
    EXPECT_EQ(check("GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").info.host, "127.0.0.1");
    EXPECT_EQ(check("GET / HTTP/1.0\r\n\r\n").rc, 0);
    const char *bad[] = {
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nhost: b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a:80x\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a:123456\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: [zz]\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a@b\r\n\r\n",
    };
    for (const char *head : bad) {
        Checked c = check(head);
        EXPECT_EQ(c.rc, -1) << head;
        EXPECT_EQ(c.status, 400) << head;
        EXPECT_FALSE(c.info.keep_alive) << head;
    }    // Every field byte inside a reg-name: accepted exactly when RFC 3986 allows it
    // (unreserved, sub-delims, and % of a percent-encoding).
    const std::string extras = "-._~!$&'()*+,;=%";
    for (int b = 1; b < 256; b++) {
        char ch = char(b);
        if ((b < 0x20 && ch != '\t') || b == 0x7f) continue;  // not field bytes: the parser refuses them
        bool allowed = (b < 128 && isalnum(b)) || extras.find(ch) != std::string::npos;
        EXPECT_EQ(check(std::string("GET / HTTP/1.1\r\nHost: a") + ch + "b\r\n\r\n").rc, allowed ? 0 : -1) << b;
    }
}

TEST(HttpCheck, FramingThatCouldBeReadTwoWaysIsRefused) {
    Checked ok = check("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n");
    EXPECT_EQ(ok.rc, 0);
    EXPECT_TRUE(ok.info.has_content_length);
    EXPECT_EQ(ok.info.content_length, 5u);
    Checked chunked = check("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n");
    EXPECT_EQ(chunked.rc, 0);
    EXPECT_TRUE(chunked.info.chunked);
    struct Case { const char *head; int status; };
    const Case cases[] = {
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0x10\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length:\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501},
    };
    for (const Case &c : cases) {
        Checked r = check(c.head);
        EXPECT_EQ(r.rc, -1) << c.head;
        EXPECT_EQ(r.status, c.status) << c.head;
    }
}

TEST(HttpCheck, PersistenceFollowsVersionAndConnection) {
    EXPECT_TRUE(check("GET / HTTP/1.1\r\nHost: x\r\n\r\n").info.keep_alive);
    EXPECT_FALSE(check("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").info.keep_alive);
    EXPECT_FALSE(check("GET / HTTP/1.1\r\nHost: x\r\nConnection: te, Close\r\n\r\n").info.keep_alive);
    EXPECT_FALSE(check("GET / HTTP/1.0\r\n\r\n").info.keep_alive);
    EXPECT_TRUE(check("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").info.keep_alive);
    EXPECT_TRUE(check("POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n").info.expect_continue);
}
