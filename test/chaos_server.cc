// chaos_server.cc - an httpd with faults on demand, for test/chaos.py.
//
//   chaos_server [--listen ADDR] [--timeout SEC] [--start-servers N]
//                [--min-spare-servers N] [--max-spare-servers N]
//                [--fail-while FILE] [--shutdown-on-error] DOCROOT
//
// Serves DOCROOT and /server-status like httpd, plus:
//   GET /hang          a handler that never returns (the watchdog's job)
//   --fail-while FILE  every worker's init hook fails while FILE exists
#include "prefork.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <string>

#include <unistd.h>

int main(int argc, char **argv) {
    prefork::Options options;
    std::string listen = "127.0.0.1:8080", docroot, fail_while;
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        bool has_value = i + 1 < argc;
        if (arg == "--shutdown-on-error") options.shutdown_on_error = true;
        else if (arg == "--listen" && has_value) listen = argv[++i];
        else if (arg == "--timeout" && has_value) options.timeout = atof(argv[++i]);
        else if (arg == "--start-servers" && has_value) options.start_servers = atoi(argv[++i]);
        else if (arg == "--min-spare-servers" && has_value) options.min_spare_servers = atoi(argv[++i]);
        else if (arg == "--max-spare-servers" && has_value) options.max_spare_servers = atoi(argv[++i]);
        else if (arg == "--fail-while" && has_value) fail_while = argv[++i];
        else if (arg[0] != '-' && docroot.empty()) docroot = arg;
        else {
            fprintf(stderr, "chaos_server: bad argument %s\n", arg.c_str());
            return 2;
        }
    }
    prefork::Server server(options);
    server.on_log([](prefork::LogLevel level, const char *message) {
        if (level != prefork::LogLevel::debug) prefork::log_to_stderr(level, message);
    });
    if (server.listen(listen) != 0) {
        fprintf(stderr, "chaos_server: %s\n", server.error().c_str());
        return 1;
    }
    prefork::HttpService http;
    http.route("GET", "^/hang$", [](prefork::HttpContext &, prefork::HttpResponse &) {
        for (;;) pause();
    });
    if (http.serve_status("/server-status") != 0 || http.serve_directory(docroot.empty() ? "." : docroot) != 0) {
        fprintf(stderr, "chaos_server: %s\n", http.error().c_str());
        return 2;
    }
    if (!fail_while.empty())
        server.on_worker_start([fail_while](prefork::Worker &) { return access(fail_while.c_str(), F_OK) != 0; });
    server.on_connection([&http](prefork::Worker &worker, int fd) { http.serve(worker, fd); });
    int rc = server.run();
    if (rc != 0) fprintf(stderr, "chaos_server: %s\n", server.error().c_str());
    return rc == 0 ? 0 : 1;
}
