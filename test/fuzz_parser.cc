// fuzz_parser.cc - libFuzzer target for the HTTP request parser, the
// chunked body decoder, percent-decoding and address ranges.
// `make fuzz` builds it with clang (ASan + UBSan) and runs it over
// test/fuzz_corpus for FUZZ_SECONDS. Besides "no crash", it checks the
// parser's contract: views stay inside the input, the length returned is
// within it, and every prefix answers "incomplete" or the same error.
#include "prefork.h"

#include <cstdint>
#include <cstdlib>
#include <cstring>

#include <netinet/in.h>

using namespace prefork;

static bool inside(std::string_view view, const char *begin, size_t size) {
    return view.empty() || (view.data() >= begin && view.data() + view.size() <= begin + size);
}

static int parse(const char *data, size_t size, HttpRequest *request, HttpHeader *headers, int *status) {
    return parse_request(data, size, request, headers, http_max_headers, status);
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t *bytes, size_t size) {
    const char *data = reinterpret_cast<const char *>(bytes);
    HttpRequest request;
    HttpHeader headers[http_max_headers];
    int status = 0;
    int rc = parse(data, size, &request, headers, &status);
    if (rc >= 0) {
        if (size_t(rc) > size || !inside(request.method, data, size) ||
            !inside(request.target, data, size))
            abort();
        for (size_t i = 0; i < request.header_count; i++)
            if (!inside(headers[i].name, data, size) || !inside(headers[i].value, data, size)) abort();
        HttpRequestInfo info;
        int check_status = 0;
        if (check_request(request, &info, &check_status) < 0 && check_status != 400 && check_status != 501)
            abort();
    } else if (rc == http_malformed) {
        if (status != 400 && status != 414 && status != 431 && status != 505) abort();
    } else if (rc != http_incomplete) {
        abort();
    }
    if (size > 0) {
        HttpRequest shorter;
        HttpHeader shorter_headers[http_max_headers];
        int shorter_status = 0;
        int prefix = parse(data, size - 1, &shorter, shorter_headers, &shorter_status);
        if (prefix >= 0 && rc != prefix) abort();  // a complete head stays complete
        if (prefix == http_malformed && (rc != http_malformed || shorter_status != status)) abort();
    }
    // The chunked decoder: fed at once or in two pieces, it must agree.
    {
        ChunkedDecoder whole, parts;
        std::string once, twice;
        bool big = false;
        long all = whole.feed(data, size, &once, 1 << 16, &big);
        size_t split = size ? bytes[0] % (size + 1) : 0;
        long first = parts.feed(data, split, &twice, 1 << 16, &big);
        long second = first < 0 ? -1 : parts.feed(data + first, size - size_t(first), &twice, 1 << 16, &big);
        if (all >= 0 && (first < 0 || second < 0 || first + second != all || once != twice ||
                         whole.done() != parts.done()))
            abort();
        if (all < 0 && first >= 0 && second >= 0) abort();
    }
    // Percent-decoding: a success holds no NUL and is never longer.
    {
        std::string decoded;
        if (percent_decode(std::string_view(data, size), &decoded) &&
            (decoded.size() > size || decoded.find('\0') != std::string::npos))
            abort();
    }
    // Address ranges: what parses contains its own address.
    {
        AddressRange range;
        if (AddressRange::parse(std::string(data, size), &range)) {
            if ((range.family != AF_INET && range.family != AF_INET6) ||
                range.bits > (range.family == AF_INET ? 32 : 128))
                abort();
            sockaddr_storage own{};
            own.ss_family = sa_family_t(range.family);
            if (range.family == AF_INET) memcpy(&reinterpret_cast<sockaddr_in &>(own).sin_addr, range.bytes, 4);
            else memcpy(&reinterpret_cast<sockaddr_in6 &>(own).sin6_addr, range.bytes, 16);
            if (!range.contains(reinterpret_cast<sockaddr *>(&own), sizeof own)) abort();
        }
    }
    return 0;
}
