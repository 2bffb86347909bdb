// harness.h - runs a prefork server in a child process for the tests.
//
// Every test that forks a server, whether a prefork::Server here or the
// httpd program, runs it as a ProcessGroup: the child leads a process group
// of its own, every wait has a deadline, and teardown kills that group, so
// a hung test fails instead of hanging the run, and kills nothing else.
// TestServer's log goes to a file whose lines start with CLOCK_MONOTONIC
// milliseconds. Its connection handler speaks a one-line command protocol
// (see harness.cc) that lets a test make a worker hold, hang, leak or report
// itself.
#ifndef PREFORK_TEST_HARNESS_H
#define PREFORK_TEST_HARNESS_H

#include "prefork.h"

#include <functional>
#include <string>
#include <vector>

#include <sys/types.h>

namespace harness {

int64_t now_ms();

// Polls pred every 5 ms until it is true or timeout_ms passes.
bool eventually(const std::function<bool()> &pred, int timeout_ms = 5000);

// A client connection to the server under test.
class Client {
public:
    explicit Client(const std::string &address);  // "127.0.0.1:PORT" or "unix:PATH"
    ~Client();
    Client(const Client &) = delete;
    bool connected() const { return fd_ >= 0; }
    bool send(const std::string &text);
    // Reads one line (without '\n'); "" on EOF, error or timeout.
    std::string line(int timeout_ms = 5000);
    // Reads exactly n bytes; fewer on EOF, error or timeout.
    std::string bytes(size_t n, int timeout_ms = 5000);
    // Reads until EOF; false on timeout.
    bool until_eof(std::string *out, int timeout_ms = 5000);
    void close();

private:
    int fd_ = -1;
    std::string buffered_;
};

// Sends one command on a new connection and returns the whole answer.
std::string ask(const std::string &address, const std::string &command, int timeout_ms = 5000);

// In a child: runs program with args through PREFORK_TEST_LAUNCHER when it
// is set (make cross-test: qemu-user). Returns 127 if it could not.
int exec_program(std::string program, std::vector<std::string> args);

// A child process leading a process group of its own: what it forks stays
// in the group, so stopping it can take them all, and nothing else.
class ProcessGroup {
public:
    ProcessGroup() = default;
    ProcessGroup(const ProcessGroup &) = delete;
    ProcessGroup &operator=(const ProcessGroup &) = delete;
    // stop(), then SIGKILL to the group: what the child forked (the workers
    // of a parent a test killed) may outlive it.
    ~ProcessGroup();

    // Forks; the child makes a new process group, runs child() and leaves
    // with _exit(what it returned). false (with a gtest failure) if fork
    // failed.
    bool start(const std::function<int()> &child);
    pid_t pid() const { return pid_; }
    // The child's wait status once it has exited, -1 if it has not within
    // timeout_ms. Once it is reaped, its status at once.
    int wait_exit(int timeout_ms);
    bool reaped() const { return reaped_; }
    int status() const { return status_; }
    // Sends sig to the child alone; false once it is reaped.
    bool signal(int sig) const;
    // SIGTERM to the child; if it has not exited within grace_ms, SIGKILL to
    // the group, and up to 5 s more. true if it stopped on SIGTERM (or was
    // reaped or never started); false if it had to be killed.
    bool stop(int grace_ms = 3000);
    void kill_group();

private:
    pid_t pid_ = -1;
    bool reaped_ = false;
    int status_ = -1;
};

class TestServer {
public:
    prefork::Options options;
    std::vector<std::string> listen_specs{"127.0.0.1:0"};
    std::vector<prefork::InitHook> hooks;
    prefork::ConnectionHandler handler;  // default: the command protocol
    prefork::ConnectionHandler refusal;  // Server::on_refusal, when set
    std::function<void()> in_child;  // runs in the server child before run()
    bool log_through_stderr = false;  // use prefork::log_to_stderr, stderr to the log
    bool expect_clean_ipc = true;     // after a clean exit, no IPC object may remain

    TestServer();
    // ProcessGroup::stop(), a failure if it takes SIGKILL. A server that
    // exited on its own or by SIGTERM must have left no System V object
    // behind.
    ~TestServer();

    // Binds, forks and runs the server. false (with a gtest failure) if it
    // could not start.
    bool start();
    pid_t pid() const { return group_.pid(); }
    const std::string &address() const { return address_; }

    std::string log() const;
    // Lines of the log containing needle.
    std::vector<std::string> log_lines(const std::string &needle) const;
    bool wait_log(const std::string &needle, int count = 1, int timeout_ms = 5000) const;

    // The parent's children right now (its workers).
    std::vector<pid_t> workers() const;
    bool wait_workers(size_t count, int timeout_ms = 5000) const;

    // Waits for the parent to exit; its wait status, or -1 on timeout.
    int wait_exit(int timeout_ms = 5000) { return group_.wait_exit(timeout_ms); }
    bool signal(int sig) const { return group_.signal(sig); }

private:
    ProcessGroup group_;
    std::string address_;
    std::string log_path_;
};

// Sets what the "hook" command answers in this worker.
void set_hook_record(const std::string &text);

// Pids of live processes among pids (zombies count as gone).
std::vector<pid_t> alive(const std::vector<pid_t> &pids);

// System V objects still present that were created by pid: semaphore sets
// (found by prefork's marker) plus shared memory segments (by creator pid).
int ipc_objects_of(pid_t pid);

// Shared memory segments created by pid and not yet marked for removal.
int unremoved_segments_of(pid_t pid);

}  // namespace harness

#endif
