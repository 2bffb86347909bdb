// example_line_kv.cc - a line-protocol key-value server on the plain API:
// "SET key value", "GET key", "DEL key", "QUIT", one per line. Values are
// files in a directory, so every worker sees them. Between commands the
// handler waits with worker.wait(), so a graceful stop or restart ends an
// idle client at once ("BYE") instead of waiting out graceful_timeout.
//   example_line_kv unix:/tmp/kv.sock /tmp/kv
//   printf 'SET a 1\nGET a\nQUIT\n' | nc -U /tmp/kv.sock
#include "prefork.h"

#include <cerrno>
#include <cstdio>
#include <fstream>
#include <poll.h>
#include <sstream>
#include <unistd.h>

using namespace prefork;

static std::string run(const std::string &dir, const std::string &line) {
    std::istringstream words(line);
    std::string command, key, value;
    words >> command >> key;
    std::getline(words >> std::ws, value);
    if (key.empty() || key.find_first_not_of("abcdefghijklmnopqrstuvwxyz0123456789_-") != std::string::npos)
        return "ERROR keys are [a-z0-9_-]+\n";
    std::string path = dir + "/" + key;
    if (command == "SET") {
        std::string temporary = path + "." + std::to_string(getpid());
        std::ofstream(temporary) << value;  // then rename: readers see all or nothing
        return rename(temporary.c_str(), path.c_str()) == 0 ? "OK\n" : "ERROR cannot store\n";
    }
    if (command == "GET") {
        std::ifstream in(path);
        if (!in) return "NOT_FOUND\n";
        std::getline(in, value);
        return "VALUE " + value + "\n";
    }
    if (command == "DEL") return unlink(path.c_str()) == 0 ? "OK\n" : "NOT_FOUND\n";
    return "ERROR unknown command\n";
}

static void serve(Worker &worker, int fd, const std::string &dir) {
    std::string in, out;
    for (char buffer[4096];;) {
        for (size_t end; (end = in.find('\n')) != std::string::npos; in.erase(0, end + 1)) {
            std::string line = in.substr(0, end);
            if (line == "QUIT") return;
            out = run(dir, line);
            if (write(fd, out.data(), out.size()) != ssize_t(out.size())) return;
        }
        int ready = worker.wait(fd, POLLIN, 30000);  // an idle client may wait 30 s
        if (ready < 0 && errno == ECANCELED) (void)!write(fd, "BYE server stopping\n", 20);
        ssize_t n = ready > 0 ? read(fd, buffer, sizeof buffer) : 0;
        if (n <= 0 || in.size() > 65536) return;
        in.append(buffer, size_t(n));
    }
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: example_line_kv LISTEN DATADIR\n");
        return 2;
    }
    std::string dir = argv[2];
    Server server;
    server.on_log(log_to_stderr_at(LogLevel::info));
    if (server.listen(argv[1]) != 0) {
        fprintf(stderr, "example_line_kv: %s\n", server.error().c_str());
        return 1;
    }
    server.on_connection([&](Worker &w, int fd) { serve(w, fd, dir); });
    return server.run() == 0 ? 0 : 1;
}
