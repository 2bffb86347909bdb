#include "prefork.h"
#include <cstdio>
#include <unistd.h>

int main(int argc, char **argv) {
    prefork::Options options;
    options.start_servers = 2;
    options.max_requests_per_child = 1000;
    prefork::Server server(options);
    server.on_log(prefork::log_to_stderr);
    if (server.listen(argc > 1 ? argv[1] : "127.0.0.1:8080") != 0) {
        std::fprintf(stderr, "example: %s\n", server.error().c_str());
        return 1;
    }
    server.on_connection([](prefork::Worker &, int fd) {
        static const char reply[] = "hello from a worker\n";
        (void)!write(fd, reply, sizeof reply - 1);
    });
    if (server.run() != 0) {
        std::fprintf(stderr, "example: %s\n", server.error().c_str());
        return 1;
    }
    return 0;
}
