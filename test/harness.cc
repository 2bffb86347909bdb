// harness.cc - the test server child, its command protocol, and helpers.
//
// Commands, one line each, answered by whichever worker accepts:
//   pid          "pid P gen G"
//   hold         "held P", then waits for "release" or EOF, then "bye"
//   linger       "lingering P", then waits for "release", EOF or stopping(),
//                then "bye" or "bye stopping"
//   hang         "hanging P", then never returns and never heartbeats
//   beat MS      works MS milliseconds calling heartbeat(), then "done P"
//   lock         takes the scoreboard lock, "locked P", then hangs
//   sb           the scoreboard as the worker sees it
//   pause MS     stop_listening(), start_listening() again after MS
//   grow KIB     allocates and touches KIB of memory, "grown P"
//   crash        abort()
//   stopping     "stopping 0|1"
//   log TEXT     logs TEXT through the worker, "logged P"
//   hook         what the init hook recorded in this worker
#include "harness.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/ipc.h>
#include <sys/sem.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

namespace harness {

int64_t now_ms() {
    timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return int64_t(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
}

bool eventually(const std::function<bool()> &pred, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        if (pred()) return true;
        if (now_ms() >= deadline) return false;
        poll(nullptr, 0, 5);
    }
}

static int connect_to(const std::string &address) {
    if (address.compare(0, 5, "unix:") == 0) {
        sockaddr_un un;
        memset(&un, 0, sizeof un);
        un.sun_family = AF_UNIX;
        snprintf(un.sun_path, sizeof un.sun_path, "%s", address.c_str() + 5);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr *>(&un), sizeof un) == 0) return fd;
        if (fd >= 0) close(fd);
        return -1;
    }
    size_t colon = address.rfind(':');
    std::string host = address.substr(0, colon);
    int port = atoi(address.c_str() + colon + 1);
    sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    socklen_t length;
    if (!host.empty() && host[0] == '[') {
        sockaddr_in6 *in6 = reinterpret_cast<sockaddr_in6 *>(&ss);
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(uint16_t(port));
        inet_pton(AF_INET6, host.substr(1, host.size() - 2).c_str(), &in6->sin6_addr);
        length = sizeof *in6;
    } else {
        sockaddr_in *in = reinterpret_cast<sockaddr_in *>(&ss);
        in->sin_family = AF_INET;
        in->sin_port = htons(uint16_t(port));
        inet_pton(AF_INET, host.c_str(), &in->sin_addr);
        length = sizeof *in;
    }
    int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr *>(&ss), length) == 0) return fd;
    if (fd >= 0) close(fd);
    return -1;
}

Client::Client(const std::string &address) : fd_(connect_to(address)) {}
Client::~Client() { close(); }

void Client::close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
}

bool Client::send(const std::string &text) {
    return fd_ >= 0 && ::send(fd_, text.data(), text.size(), MSG_NOSIGNAL) == ssize_t(text.size());
}

std::string Client::line(int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        size_t newline = buffered_.find('\n');
        if (newline != std::string::npos) {
            std::string out = buffered_.substr(0, newline);
            buffered_.erase(0, newline + 1);
            return out;
        }
        int64_t left = deadline - now_ms();
        if (fd_ < 0 || left <= 0) return "";
        pollfd p = {fd_, POLLIN, 0};
        if (poll(&p, 1, int(left)) <= 0) continue;
        char chunk[4096];
        ssize_t n = read(fd_, chunk, sizeof chunk);
        if (n <= 0) return "";
        buffered_.append(chunk, size_t(n));
    }
}

std::string Client::bytes(size_t n, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    while (buffered_.size() < n && fd_ >= 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0) break;
        pollfd p = {fd_, POLLIN, 0};
        if (poll(&p, 1, int(left)) <= 0) continue;
        char chunk[4096];
        ssize_t got = read(fd_, chunk, sizeof chunk);
        if (got <= 0) break;
        buffered_.append(chunk, size_t(got));
    }
    std::string out = buffered_.substr(0, n);
    buffered_.erase(0, out.size());
    return out;
}

bool Client::until_eof(std::string *out, int timeout_ms) {
    int64_t deadline = now_ms() + timeout_ms;
    *out = buffered_;
    buffered_.clear();
    while (fd_ >= 0) {
        int64_t left = deadline - now_ms();
        if (left <= 0) return false;
        pollfd p = {fd_, POLLIN, 0};
        if (poll(&p, 1, int(left)) <= 0) continue;
        char chunk[4096];
        ssize_t n = read(fd_, chunk, sizeof chunk);
        if (n <= 0) return true;
        out->append(chunk, size_t(n));
    }
    return false;
}

std::string ask(const std::string &address, const std::string &command, int timeout_ms) {
    Client client(address);
    std::string out;
    if (!client.send(command + "\n") || !client.until_eof(&out, timeout_ms)) return "";
    return out;
}

// ---- the server side ------------------------------------------------------

static std::string hook_record;  // set by init hooks, in the worker only
volatile char *volatile grown_memory;  // what "grow" keeps, visible so no optimiser drops it

void set_hook_record(const std::string &text) { hook_record = text; }

static std::string read_line(int fd) {
    std::string line;
    char c;
    while (line.size() < 1024) {
        pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 10000) <= 0 || read(fd, &c, 1) != 1) break;
        if (c == '\n') break;
        line += c;
    }
    return line;
}

static void reply(int fd, const std::string &text) {
    (void)!send(fd, text.data(), text.size(), MSG_NOSIGNAL);
}

static void forever() {
    for (;;) pause();
}

static std::string scoreboard_text(prefork::Worker &w) {
    prefork::Snapshot s = w.scoreboard().snapshot();
    std::ostringstream out;
    out << "idle " << s.idle << " busy " << s.busy << " starting " << s.starting << " exiting "
        << s.exiting << " gen " << s.generation << " connections " << s.connections
        << " requests " << s.requests << "\n";
    for (size_t i = 0; i < s.slots.size(); i++) {
        const prefork::Slot &slot = s.slots[i];
        if (slot.state == prefork::SlotState::free) continue;
        out << "slot " << i << " pid " << slot.pid << " state " << prefork::Snapshot::letter(slot)
            << " gen " << slot.generation << " started " << slot.started_ms << " requests "
            << slot.requests << " request [" << slot.request << "]\n";
    }
    out << "render " << s.render() << "\n";
    return out.str();
}

static void handle_command(prefork::Worker &w, int fd) {
    std::string line = read_line(fd);
    std::string pid = std::to_string(getpid());
    w.count_request(line.c_str(), line.size());
    std::string verb = line.substr(0, line.find(' '));
    std::string arg = line.find(' ') == std::string::npos ? "" : line.substr(line.find(' ') + 1);
    if (verb == "pid") {
        reply(fd, "pid " + pid + " gen " + std::to_string(w.generation()) + "\n");
    } else if (verb == "hold") {
        reply(fd, "held " + pid + "\n");
        read_line(fd);
        reply(fd, "bye\n");
    } else if (verb == "linger") {
        // Like hold, but a cooperative handler: it also ends at stopping().
        reply(fd, "lingering " + pid + "\n");
        pollfd p = {fd, POLLIN, 0};
        while (!w.stopping() && poll(&p, 1, 50) == 0) continue;
        if (p.revents) read_line(fd);
        reply(fd, w.stopping() ? "bye stopping\n" : "bye\n");
    } else if (verb == "hang") {
        reply(fd, "hanging " + pid + "\n");
        forever();
    } else if (verb == "beat") {
        int64_t until = now_ms() + atoi(arg.c_str());
        while (now_ms() < until) {
            w.heartbeat();
            poll(nullptr, 0, 50);
        }
        reply(fd, "done " + pid + "\n");
    } else if (verb == "lock") {
        w.scoreboard().lock();
        reply(fd, "locked " + pid + "\n");
        forever();
    } else if (verb == "sb") {
        reply(fd, scoreboard_text(w));
    } else if (verb == "pause") {
        w.stop_listening();
        int ms = atoi(arg.c_str());
        std::thread([&w, ms] {
            poll(nullptr, 0, ms);
            w.start_listening();
        }).detach();
        reply(fd, "paused " + pid + "\n");
    } else if (verb == "grow") {
        size_t bytes = size_t(atol(arg.c_str())) * 1024;
        volatile char *leak = static_cast<volatile char *>(malloc(bytes));
        for (size_t i = 0; leak && i < bytes; i += 4096) leak[i] = 1;
        grown_memory = leak;
        reply(fd, "grown " + pid + "\n");
    } else if (verb == "crash") {
        abort();
    } else if (verb == "stopping") {
        reply(fd, std::string("stopping ") + (w.stopping() ? "1" : "0") + "\n");
    } else if (verb == "log") {
        w.log(prefork::LogLevel::notice, "%s", arg.c_str());
        reply(fd, "logged " + pid + "\n");
    } else if (verb == "hook") {
        reply(fd, hook_record + "\n");
    } else {
        reply(fd, "unknown command\n");
    }
}

// ---- the process group ----------------------------------------------------

bool ProcessGroup::start(const std::function<int()> &child) {
    fflush(nullptr);  // or what is buffered now is the child's to write too
    pid_ = fork();
    if (pid_ == 0) {
        setpgid(0, 0);
        _exit(child());
    }
    if (pid_ < 0) {
        ADD_FAILURE() << "fork: " << strerror(errno);
        return false;
    }
    setpgid(pid_, pid_);  // as the child does: whichever runs first
    return true;
}

int ProcessGroup::wait_exit(int timeout_ms) {
    if (pid_ <= 0) return -1;
    int status = -1;
    if (!reaped_ && eventually([&] { return waitpid(pid_, &status, WNOHANG) == pid_; }, timeout_ms)) {
        reaped_ = true;
        status_ = status;
    }
    return reaped_ ? status_ : -1;
}

bool ProcessGroup::signal(int sig) const { return pid_ > 0 && !reaped_ && kill(pid_, sig) == 0; }

bool ProcessGroup::stop(int grace_ms) {
    if (pid_ <= 0 || reaped_) return true;
    kill(pid_, SIGTERM);
    if (wait_exit(grace_ms) >= 0) return true;
    kill_group();
    wait_exit(5000);
    return false;
}

void ProcessGroup::kill_group() {
    if (pid_ > 0) kill(-pid_, SIGKILL);
}

ProcessGroup::~ProcessGroup() {
    stop();
    kill_group();
}

// ---- the test server ------------------------------------------------------

TestServer::TestServer() {
    options.start_servers = 2;
    options.min_spare_servers = 1;
    options.max_spare_servers = 4;
    options.max_clients = 8;
    options.graceful_timeout = 5;
}

static int open_log(std::string *path) {
    char name[] = "/tmp/prefork-test-log-XXXXXX";
    int fd = mkstemp(name);
    if (fd >= 0) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
        int flags = fcntl(fd, F_GETFL);
        fcntl(fd, F_SETFL, flags | O_APPEND);
    }
    *path = name;
    return fd;
}

bool TestServer::start() {
    int log_fd = open_log(&log_path_);
    if (log_fd < 0) {
        ADD_FAILURE() << "cannot create a log file";
        return false;
    }
    prefork::Server server(options);
    for (const std::string &spec : listen_specs)
        if (server.listen(spec) != 0) {
            ADD_FAILURE() << "listen " << spec << ": " << server.error();
            close(log_fd);
            return false;
        }
    address_ = server.address(0);
    if (log_through_stderr)
        server.on_log(prefork::log_to_stderr);
    else
        server.on_log([log_fd](prefork::LogLevel level, const char *message) {
            char line[1400];
            int n = snprintf(line, sizeof line, "%lld [%s] [pid %d] %s\n", (long long)now_ms(),
                             prefork::log_level_name(level), int(getpid()), message);
            if (n > 0) (void)!write(log_fd, line, std::min<size_t>(size_t(n), sizeof line - 1));
        });
    server.on_connection(handler ? handler : prefork::ConnectionHandler(handle_command));
    if (refusal) server.on_refusal(refusal);
    for (const prefork::InitHook &hook : hooks) server.on_worker_start(hook);
    server.on_worker_start([](prefork::Worker &) {
        if (hook_record.empty()) hook_record = "none";
        return true;
    });
    bool started = group_.start([&] {
        if (log_through_stderr) dup2(log_fd, 2);
        if (in_child) in_child();
        return server.run() == 0 ? 0 : 3;
    });
    close(log_fd);
    return started;
}

TestServer::~TestServer() {
    if (!group_.stop(3000)) ADD_FAILURE() << "the server did not stop on SIGTERM within 3 s";
    if (group_.reaped() && WIFEXITED(group_.status()) && expect_clean_ipc) {
        EXPECT_EQ(ipc_objects_of(pid()), 0) << "System V objects left behind by " << pid();
    }
    if (!log_path_.empty()) unlink(log_path_.c_str());
    // Then group_ goes, with any workers that outlived a parent a test killed.
}

std::string TestServer::log() const {
    std::ifstream in(log_path_);
    std::stringstream buffer;
    buffer << in.rdbuf();
    return buffer.str();
}

std::vector<std::string> TestServer::log_lines(const std::string &needle) const {
    std::vector<std::string> out;
    std::istringstream in(log());
    std::string line;
    while (std::getline(in, line))
        if (line.find(needle) != std::string::npos) out.push_back(line);
    return out;
}

bool TestServer::wait_log(const std::string &needle, int count, int timeout_ms) const {
    return eventually([&] { return int(log_lines(needle).size()) >= count; }, timeout_ms);
}

std::vector<pid_t> TestServer::workers() const {
    std::vector<pid_t> out;
    std::string path = "/proc/" + std::to_string(pid()) + "/task/" + std::to_string(pid()) + "/children";
    std::ifstream in(path);
    pid_t child;
    while (in >> child) out.push_back(child);
    return alive(out);
}

bool TestServer::wait_workers(size_t count, int timeout_ms) const {
    return eventually([&] { return workers().size() == count; }, timeout_ms);
}

std::vector<pid_t> alive(const std::vector<pid_t> &pids) {
    std::vector<pid_t> out;
    for (pid_t pid : pids) {
        std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
        std::string stat;
        if (!std::getline(in, stat)) continue;
        size_t paren = stat.rfind(')');
        if (paren == std::string::npos || paren + 2 >= stat.size()) continue;
        char state = stat[paren + 2];
        if (state != 'Z' && state != 'X') out.push_back(pid);
    }
    return out;
}

int ipc_objects_of(pid_t creator) {
    int count = 0;
    std::ifstream sem("/proc/sysvipc/sem");
    std::string line;
    std::getline(sem, line);
    while (std::getline(sem, line)) {
        std::istringstream fields(line);
        long key, id, perms, nsems;
        // prefork's sets: lock, alive, marker, creator pid high and low
        if (!(fields >> key >> id >> perms >> nsems) || nsems != 5) continue;
        unsigned short values[5];
        union { int val; unsigned short *array; } arg;
        arg.array = values;
        if (semctl(int(id), 0, GETALL, arg) < 0 || values[2] != 0x5046) continue;
        if (pid_t((values[3] << 15) | values[4]) == creator) count++;
    }
    std::ifstream shm("/proc/sysvipc/shm");
    std::getline(shm, line);
    while (std::getline(shm, line)) {
        std::istringstream fields(line);
        long key, id, perms, size, cpid;
        if (fields >> key >> id >> perms >> size >> cpid && cpid == creator) count++;
    }
    return count;
}

int unremoved_segments_of(pid_t creator) {
    int count = 0;
    std::ifstream shm("/proc/sysvipc/shm");
    std::string line;
    std::getline(shm, line);
    while (std::getline(shm, line)) {
        std::istringstream fields(line);
        long key, id, size, cpid;
        std::string perms;
        if (fields >> key >> id >> perms >> size >> cpid && cpid == creator &&
            !(std::stol(perms, nullptr, 8) & 01000))  // SHM_DEST
            count++;
    }
    return count;
}

int exec_program(std::string program, std::vector<std::string> args) {
    std::vector<char *> argv;
    std::string launcher = getenv("PREFORK_TEST_LAUNCHER") ? getenv("PREFORK_TEST_LAUNCHER") : "";
    if (!launcher.empty()) argv.push_back(&launcher[0]);
    argv.push_back(&program[0]);
    for (std::string &a : args) argv.push_back(&a[0]);
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    return 127;
}

}  // namespace harness
