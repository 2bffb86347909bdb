// chaos_server.cc - an httpd with faults on demand, for test/chaos.py.
//
//   chaos_server [--listen ADDR] [--timeout SEC] [--start-servers N]
//                [--min-spare-servers N] [--max-spare-servers N]
//                [--max-clients N] [--fail-while FILE] [--shutdown-on-error]
//                DOCROOT
//
// Serves DOCROOT and /server-status like httpd, plus:
//   GET /hang          a handler that never returns (the watchdog's job)
//   GET /crash         the worker raises SIGSEGV while serving
//   GET /abort         the worker calls abort() while serving
//   GET /throw         the handler throws std::runtime_error("chaos: thrown
//                      on purpose"); this file is built with exceptions on,
//                      unlike the lean httpd
//   GET /sleep         answers "slept\n" after 2 s, heartbeating meanwhile
//   POST /upload       answers "got N bytes\n" for a body of N bytes
//   --fail-while FILE  every worker's init hook fails while FILE exists
#include "prefork.h"

#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <stdexcept>
#include <string>

#include <poll.h>
#include <time.h>
#include <unistd.h>

static int64_t monotonic_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

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
        else if (arg == "--max-clients" && has_value) options.max_clients = atoi(argv[++i]);
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
    http.route("GET", "^/crash$", [](prefork::HttpContext &, prefork::HttpResponse &) { raise(SIGSEGV); });
    http.route("GET", "^/abort$", [](prefork::HttpContext &, prefork::HttpResponse &) { abort(); });
    http.route("GET", "^/throw$", [](prefork::HttpContext &, prefork::HttpResponse &) {
        throw std::runtime_error("chaos: thrown on purpose");
    });
    http.route("POST", "^/upload$", [](prefork::HttpContext &context, prefork::HttpResponse &response) {
        response.body("got " + std::to_string(context.body.size()) + " bytes\n");
    });
    // A slow request that is alive: a worker it occupies is busy, not hung.
    http.route("GET", "^/sleep$", [](prefork::HttpContext &context, prefork::HttpResponse &response) {
        int64_t end = monotonic_ms() + 2000;
        for (int64_t left; (left = end - monotonic_ms()) > 0;) {
            poll(nullptr, 0, int(left < 100 ? left : 100));
            if (context.worker) context.worker->heartbeat();
        }
        response.body("slept\n");
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
