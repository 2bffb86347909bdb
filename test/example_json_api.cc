// example_json_api.cc - a JSON key-value API on HttpService, its values kept
// as files in a directory so that every worker sees them.
//   example_json_api unix:/tmp/kv.sock /tmp/kv
//   curl --unix-socket /tmp/kv.sock -X PUT --data 'hello' http://x/kv/greeting
//   curl --unix-socket /tmp/kv.sock http://x/kv/greeting
#include "prefork.h"

#include <cstdio>
#include <fstream>
#include <sstream>
#include <unistd.h>

using namespace prefork;

static std::string quoted(std::string_view text) {  // a JSON string
    std::string out = "\"";
    for (unsigned char c : text) {
        if (c == '"' || c == '\\') out += '\\';
        if (c >= 0x20) { out += char(c); continue; }
        char escape[8];
        snprintf(escape, sizeof escape, "\\u%04x", c);
        out += escape;
    }
    return out + "\"";
}

static void json(HttpResponse &r, int status, const std::string &body) {
    r.status(status);
    r.header("Content-Type", "application/json");
    r.body(body + "\n");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: example_json_api LISTEN DATADIR\n");
        return 2;
    }
    std::string dir = argv[2];
    Server server;
    server.on_log(log_to_stderr);
    HttpService http;
    http.on_error([](const HttpContext *, int status, HttpResponse &r) {  // the library's 404, 405...
        json(r, status, "{\"error\":" + quoted(http_reason(status)) + "}");
    });
    const char *key = "^/kv/([A-Za-z0-9_-]{1,64})$";  // the route keeps names to these bytes
    http.route("GET", key, [&](HttpContext &c, HttpResponse &r) {
        std::ifstream in(dir + "/" + std::string(c.captures[0]), std::ios::binary);
        if (!in) return json(r, 404, "{\"error\":\"no such key\"}");
        std::stringstream value;
        value << in.rdbuf();
        json(r, 200, "{\"key\":" + quoted(c.captures[0]) + ",\"value\":" + quoted(value.str()) + "}");
    });
    http.route("PUT", key, [&](HttpContext &c, HttpResponse &r) {
        std::string path = dir + "/" + std::string(c.captures[0]), temporary = path + "." + std::to_string(getpid());
        std::ofstream(temporary, std::ios::binary) << c.body;  // then rename: readers see all or nothing
        if (rename(temporary.c_str(), path.c_str()) != 0) return json(r, 500, "{\"error\":\"cannot store\"}");
        json(r, 201, "{\"key\":" + quoted(c.captures[0]) + ",\"bytes\":" + std::to_string(c.body.size()) + "}");
    });
    http.route("DELETE", key, [&](HttpContext &c, HttpResponse &r) {
        if (unlink((dir + "/" + std::string(c.captures[0])).c_str()) != 0)
            return json(r, 404, "{\"error\":\"no such key\"}");
        r.status(204);
    });
    if (server.listen(argv[1]) != 0 || !http.error().empty()) {
        fprintf(stderr, "example_json_api: %s%s\n", server.error().c_str(), http.error().c_str());
        return 1;
    }
    server.on_connection([&](Worker &w, int fd) { http.serve(w, fd); });
    return server.run() == 0 ? 0 : 1;
}
