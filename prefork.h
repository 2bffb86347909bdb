/* prefork.h - prefork 0.1.0 - a preforking server toolkit in two files.

   A parent process keeps a pool of worker processes that accept connections
   on shared listening sockets and hand each one to your handler.

   WHAT IT IS
     Vendor prefork.h and prefork.cc, compile them with C++17, link nothing
     else: libc and the C++ standard library are all it uses. The parent is a
     single poll() loop fed by a self-pipe; the scoreboard is System V shared
     memory guarded by a System V semaphore taken with SEM_UNDO, so a worker
     killed while holding the lock cannot wedge the pool.

   EXAMPLE (a copy lives in test/example.cc and is built by `make test`)

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

   API
     Server(options)           Keeps a copy of the options; check them with
                               check_options() first to get friendly errors.
     server.listen(spec)       Binds "PORT", "HOST:PORT", "[V6]:PORT" or
                               "unix:PATH" in the calling process. Port 0
                               picks a free port: see server.address(i).
                               Returns 0, or -1 with server.error() set.
     server.listen_fd(fd)      Adopts an already-listening socket. 0 / -1.
     server.listen_inherited() Adopts the sockets passed in LISTEN_FDS (by
                               systemd, or by the old parent of an
                               upgrade); a later listen() of the same
                               address takes the passed socket instead of
                               binding. How many, or -1 with error().
     server.enable_upgrade(argc, argv)
                               SIGUSR2 then runs argv again (the binary on
                               disk by then) and hands it the listeners,
                               which it takes with listen_inherited(); see
                               SIGNALS. server.upgrading() is true in the
                               new program until its pool is ready.
     server.on_ready(h)        h() runs in the parent once start_servers
                               workers (at most max_spare_servers) are
                               first ready; false stops run().
     server.listener_count(), server.address(i), server.port(i)
                               The listeners in the order added, as bound
                               ("127.0.0.1:8080", "unix:/run/x"; port 0 for
                               UNIX sockets).
     server.on_connection(h)   h(worker, fd) serves one accepted connection,
                               in a worker. The library closes fd afterwards.
                               Built with exceptions, one escaping h is
                               logged and closes fd; the worker goes on.
     server.on_worker_start(h) Adds an init hook, run in every new worker
                               before it accepts, never in the parent (DB
                               handles...). Returning false (or throwing)
                               fails the worker.
     server.on_log(f)          Where log lines go. Without it the library is
                               silent. log_to_stderr is a ready-made sink
                               that stamps each line with time and pid.
     server.log(level, fmt...) Logs through that sink (parent or worker).
     server.run()              Runs the pool until SIGTERM (graceful) or
                               SIGINT (now). Returns 0, or -1 with error().
                               Installs its signal handlers for the duration.
     server.is_child()         True inside a worker.
     server.snapshot()         Copies the scoreboard (parent or worker).
     Snapshot::render()        The scoreboard as text: a summary line, then
                               one Apache letter per slot.
     worker.heartbeat()        Tells the watchdog a long handler is alive.
     worker.stop_listening()   Pause / resume accepting in this worker only
     worker.start_listening()  (safe from another thread of the worker). A
                               paused worker is not counted as a spare.
     worker.stopping()         True once the worker should finish up: the
                               server drains or restarts, the worker got
                               SIGTERM, or the parent died (the last two
                               are seen within 10 ms). Check it between
                               requests.
     worker.count_request(line, bytes)
                               Records one request in the scoreboard (and
                               counts as a heartbeat); line may be null.
     worker.note_request(line) Shows the request being served.
     worker.set_activity(c)    The letter the scoreboard shows while busy
                               ('W' unless set; 'R', 'K'... as in Apache).
     worker.peer(), peer_length(), listener()
                               The connection being served: its peer and
                               the index of the listener that took it.
     worker.slot(), generation(), is_child(), scoreboard()
                               This worker's slot and generation; true;
                               the shared scoreboard.
     scoreboard.lock(ms)       The board's SEM_UNDO lock, waiting at most ms
     scoreboard.unlock()       (-1: no bound). 0, or -1 with errno.
     reset_signals_for_exec()  For a handler about to exec: workers block
                               SIGTERM and ignore SIGPIPE, and both would
                               survive exec.

   HTTP (the responder; see the declarations at the end)
     HttpService http(http_options);
     http.route("GET", "^/hello/([a-z]+)$", [](HttpContext &c, HttpResponse &r) {
         r.body("hi " + std::string(c.captures[0]) + "\n");
     });
     http.serve_status("/server-status");   // HTML, ?auto (mod_status), ?json;
                                            // loopback clients only unless told
     http.serve_directory("/var/www");      // static files for the rest
     server.on_connection([&](Worker &w, int fd) { http.serve(w, fd); });
   HttpOptions: request_timeout [10 s] for a request head (408), keepalive_
   timeout [5 s], send_timeout [30 s] a response may stall, min_rate [500
   bytes/s] a body or response must average once its first timeout is
   spent, pressure_timeout [0.5 s] that replaces those timeouts while the
   pool is full (no idle worker, max_clients reached: a slow client gives
   its worker up to the ones waiting, and an idle keep-alive connection is
   closed at once), max_body [1 MiB] (413), server_name,
   access_log_fd [-1] (Combined Log Format). parse_request() and
   check_request() are usable on their own: a pico-shaped parser.

   OPTIONS (struct Options; defaults in brackets)
     start_servers [5]          Workers forked at start; clamped to
                                max_clients (logged).
     min_spare_servers [5]      Idle workers kept ready. A worker turning busy
     max_spare_servers [10]     wakes the parent at once when idle ones fall
                                below the minimum. Above the maximum for a
                                second, the oldest idle worker is retired,
                                then one every 250 ms. max < min becomes
                                min + 1 (logged).
     max_clients [256]          Never more workers; extra connections wait in
                                the listen backlog (listen_backlog [511]).
     max_requests_per_child [0] Connections a worker serves before it is
     max_requests_jitter [0]    replaced (0 = no limit), plus a random 0..N.
     max_rss_kib [0]            Replace a worker whose peak resident memory
                                passed this after a connection (0 = off).
     timeout [0]                Seconds a worker may go without a heartbeat
                                (busy: per connection or heartbeat(); idle:
                                the worker reports by itself) before SIGTERM,
     kill_grace [2]             then SIGKILL this many seconds later.
     graceful_timeout [30]      Bound on a graceful stop or restart; workers
                                still busy then are killed.
     shutdown_on_error [false]  Stop the server when a worker cannot be
                                started (fork or init hook failed) instead of
                                retrying with back-off.
     ipc_retry_interval [5]     Seconds between tries when shared memory or
                                the semaphore cannot be had.
     max_clients_per_ip [0]     Busy workers one client address may hold at
                                once (0 = no limit), counted on the
                                scoreboard. A connection over it goes to the
                                on_refusal() handler, or is closed, instead
                                of to on_connection()'s.
     notify_systemd [false]     When NOTIFY_SOCKET is set (systemd
                                Type=notify), send READY=1 once a worker of
                                the current generation is ready,
                                RELOADING=1 at a graceful restart (READY=1
                                again when the new generation is), STOPPING=1
                                at a stop, and STATUS= with the busy and idle
                                counts (at most once a second, when the
                                parent wakes anyway). In a SIGUSR2 upgrade
                                the old parent sends RELOADING=1, then
                                MAINPID= the new one and READY=1 (or READY=1
                                alone if it failed); the new parent is silent
                                until then. By hand: no libsystemd.
     upgrade_timeout [60]       Seconds the new program of a SIGUSR2 upgrade
                                has to get its workers ready (see SIGNALS)
                                before it is stopped and the upgrade given up.
     defer_accept [0]           Seconds a new TCP connection may wait in the
                                kernel for its first bytes before a worker
                                accepts it (Linux TCP_DEFER_ACCEPT; 0 = off).
                                Only for protocols where the client speaks
                                first, such as HTTP: a worker then never
                                waits for a silent client to begin.
     single_process [false]     No fork: the worker loop runs in run()'s own
                                process (debugging, deterministic tests).
     debug_scoreboard [false]   Log the scoreboard every second.

   SIGNALS (to the parent)
     SIGTERM  graceful stop: refuse new connections at once (on Linux,
              shutdown(2) of the listeners this server bound, which stops
              them for every process; the connections already queued are
              accepted first and served by drain workers), finish in-flight
              connections (bounded by graceful_timeout); run() returns 0.
              Sockets from listen_fd() or a service manager stay listening,
              and so do all while an upgrade's new parent shares them. In
              single_process mode the queue is not taken: it is reset.
     SIGINT   stop now: workers are killed.
     SIGHUP   graceful restart: keep the listeners, start a new generation,
              old workers finish their connection and exit.
     SIGUSR2  binary upgrade (with enable_upgrade()): fork and exec the
              command with the listeners as fds 3... (LISTEN_FDS,
              LISTEN_PID; LISTEN_FDNAMES "owned" for a UNIX socket whose
              file this parent made, "bound" for another socket it bound,
              "passed" for one a service manager passed) and one end of a socket pair after
              them (PREFORK_UPGRADE_FD). The new parent adopts them with
              listen_inherited(), starts its pool and, once start_servers
              workers (at most max_spare_servers) are ready, runs the
              on_ready() hook and writes 'R'. This parent answers 'A' and
              drains; run() returns 0 while the new parent, still its
              child, serves on: just exit. Only after 'A' does the new
              parent own the socket files and speak to systemd. If it
              exits, cannot be executed or is not ready within
              upgrade_timeout, it is stopped and this parent serves on.
              A SIGUSR2 while an upgrade is under way is ignored.
     SIGTTIN  raise min and max spare by one; SIGTTOU lowers them.
     SIGUSR1  reopen the logs: the on_reopen() hook, then a graceful
              restart so that new workers inherit the new files.
     SIGCHLD  reap, log, and replace workers.
     Workers are signalled by pid only, never through the process group.
     A worker takes SIGTERM between connections only: it stays blocked while
     a handler runs, so it never interrupts the handler's system calls, and
     worker.stopping() reports it.

   PORTABILITY
     POSIX with System V IPC. On Linux it also uses pipe2, accept4,
     PR_SET_PDEATHSIG, SEM_STAT (to remove a semaphore set left by a parent
     that was killed with SIGKILL), epoll with EPOLLEXCLUSIVE (idle workers
     wait on the listeners so that a new connection wakes one of them, not
     all), TCP_DEFER_ACCEPT, openat2 and sendfile; elsewhere poll(), a
     component-by-component open and pread. Compiles with -fno-exceptions
     -fno-rtti. The parent uses fork(); keep it single-threaded.

   LICENSE
     MIT. Copyright (c) 2026 the prefork authors. Permission is hereby
     granted, free of charge, to any person obtaining a copy of this software,
     to deal in it without restriction, provided this notice is kept. THE
     SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND.
*/
#ifndef PREFORK_H
#define PREFORK_H

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>
#include <sys/socket.h>
#include <sys/types.h>

namespace prefork {

enum class LogLevel { debug, info, notice, warning, error };

// A log sink receives one line without its newline.
using LogFn = std::function<void(LogLevel, const char *message)>;

// Writes "2026-11-22 17:46:11 [notice] [pid 123] message\n" to stderr in
// one write(2), so lines from several processes do not interleave.
void log_to_stderr(LogLevel level, const char *message);
const char *log_level_name(LogLevel level);

// In a child a handler forks to exec another program: unblocks every signal
// and restores the default disposition of those prefork handles.
void reset_signals_for_exec();

struct Options {
    int start_servers = 5;
    int min_spare_servers = 5;
    int max_spare_servers = 10;
    int max_clients = 256;
    int listen_backlog = 511;
    long max_requests_per_child = 0;
    long max_requests_jitter = 0;
    long max_rss_kib = 0;
    double timeout = 0;
    double kill_grace = 2;
    double graceful_timeout = 30;
    double ipc_retry_interval = 5;
    double defer_accept = 0;
    double upgrade_timeout = 60;
    int max_clients_per_ip = 0;
    bool notify_systemd = false;
    bool shutdown_on_error = false;
    bool single_process = false;
    bool debug_scoreboard = false;
};

// Validates and normalises options in place. Returns "" when usable, else
// one sentence naming the bad option. The seed's normalisations (start over
// max_clients, max spare under min spare) are applied and described in
// *notes when notes is not null.
std::string check_options(Options &options, std::vector<std::string> *notes);

enum class SlotState : uint8_t { free, starting, idle, busy, exiting };

// One worker's scoreboard record. Lives in shared memory; only its worker
// writes it, except that the parent claims and frees it.
struct Slot {
    int32_t pid;
    SlotState state;
    char activity;          // Apache letter while busy ('W' unless set)
    uint16_t flags;
    uint32_t generation;
    uint32_t request_seq;   // odd while request[] is being written
    int64_t started_ms;     // CLOCK_MONOTONIC milliseconds
    int64_t heartbeat_ms;
    int64_t busy_since_ms;
    uint64_t connections;
    uint64_t requests;
    uint64_t bytes;
    char request[80];       // last request line, NUL-terminated, cut short
    uint8_t client_family;  // AF_INET or AF_INET6 while busy with such a client, else 0
    uint8_t client[16];     // that client's address (IPv4-mapped ones as IPv4)
};

struct Snapshot {
    int64_t now_ms = 0;
    int64_t uptime_ms = 0;
    uint32_t generation = 0;
    int starting = 0, idle = 0, busy = 0, exiting = 0;
    uint64_t connections = 0, requests = 0, bytes = 0;  // all workers ever
    std::vector<Slot> slots;                             // max_clients long

    // Apache-style letters: '.' free, 'S' starting, '_' idle, busy as the
    // worker set it ('W' by default), 'G' exiting.
    static char letter(const Slot &slot);
    // "gen 2: 3 busy, 4 idle, 0 starting, 0 exiting; 120 connections,
    // 130 requests" then a newline and one letter per slot.
    std::string render() const;
};

struct Shared;
class Worker;
class Server;

// The System V scoreboard: one shared memory segment (removed with
// IPC_RMID as soon as it is attached) and one semaphore set.
class Scoreboard {
public:
    Scoreboard() = default;
    ~Scoreboard();
    Scoreboard(const Scoreboard &) = delete;
    Scoreboard &operator=(const Scoreboard &) = delete;

    // Creates both objects for `slots` slots. Returns 0, or -1 with *error
    // naming the kernel limit involved. First removes semaphore sets left
    // by a dead parent (Linux), logging each through log when set.
    int create(int slots, std::string *error, const LogFn &log = LogFn());
    // Detaches; in the creating process also removes the semaphore set.
    void destroy();
    bool ready() const { return shared_ != nullptr; }
    int slot_count() const;
    int semaphore_id() const { return semaphore_id_; }

    // The lock, taken with SEM_UNDO, waiting at most timeout_ms (-1: no
    // bound). 0, or -1 with errno EAGAIN (timed out) or EIDRM/EINVAL (gone).
    int lock(int timeout_ms = -1);
    int unlock();
    // Copies the board under the lock; waits for it at most 50 ms, then
    // copies without it rather than hang behind a stuck holder.
    Snapshot snapshot();

    Slot &slot(int index);
    Shared *shared() { return shared_; }

private:
    Shared *shared_ = nullptr;
    int semaphore_id_ = -1;
    pid_t creator_ = 0;
};

using ConnectionHandler = std::function<void(Worker &, int fd)>;
using InitHook = std::function<bool(Worker &)>;

class Worker {
public:
    struct Internals;  // defined in prefork.cc
    explicit Worker(Internals *internals) : in_(internals) {}

    int slot() const;
    uint32_t generation() const;
    bool is_child() const;
    void heartbeat();
    void stop_listening();
    void start_listening();
    bool listening() const;
    bool stopping() const;
    void count_request(const char *request_line, uint64_t bytes);
    void note_request(const char *request_line);  // shown while it is served
    void set_activity(char letter);
    // The peer of the connection being served, and which listener took it.
    const sockaddr_storage &peer() const;
    socklen_t peer_length() const;
    int listener() const;
    Scoreboard &scoreboard();
    // True when no worker is idle and the pool is at max_clients: the
    // moment to close idle keep-alive connections so new clients get in.
    bool pool_full() const;
    void log(LogLevel level, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

private:
    Internals *in_;
};

class Server {
public:
    explicit Server(const Options &options = Options());
    ~Server();
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;

    int listen(const std::string &spec);
    int listen_fd(int fd);
    // Adopts the listening sockets passed as fds 3... when LISTEN_PID is
    // this process and LISTEN_FDS counts them: systemd socket activation,
    // or the old parent of a binary upgrade. Removes those variables from
    // the environment. A later listen() naming the address of one of them
    // takes it instead of binding. Returns how many, or -1 with error().
    int listen_inherited();
    // True when listen_inherited() found that a binary upgrade started this
    // process: an old parent waits for this pool to be ready.
    bool upgrading() const;
    // Lets SIGUSR2 upgrade the program: argv (as main() got it) is run
    // again, the binary on disk then, handed the listeners. The program
    // must call listen_inherited() before run() to take them. Not in
    // single_process mode. 0, or -1.
    int enable_upgrade(int argc, char *const *argv);
    size_t listener_count() const;
    std::string address(size_t index) const;  // "127.0.0.1:8080", "unix:/p"
    int port(size_t index) const;              // 0 for UNIX sockets

    void on_connection(ConnectionHandler handler);
    // Gets the connections refused by max_clients_per_ip (default: closed
    // at once); it should answer briefly and return.
    void on_refusal(ConnectionHandler handler);
    // Runs in the parent on SIGUSR1 (logrotate): reopen the log files onto
    // the same descriptors (open, then dup2). The workers are then replaced
    // by a graceful restart, so that they write to the new files too.
    void on_reopen(std::function<void()> hook);
    // Runs in the parent once, when start_servers workers (at most
    // max_spare_servers) are first ready; in the new parent of an upgrade,
    // before the old parent hears so. Returning false stops the server:
    // run() returns -1.
    void on_ready(std::function<bool()> hook);
    void on_worker_start(InitHook hook);
    void on_log(LogFn log);

    int run();
    bool is_child() const;
    Snapshot snapshot();
    const Options &options() const;
    const std::string &error() const;
    void log(LogLevel level, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

    struct State;

private:
    std::unique_ptr<State> state_;
};

/* ---- HTTP/1.1 --------------------------------------------------------- */

struct HttpHeader {
    std::string_view name, value;  // value without surrounding whitespace
};

struct HttpRequest {
    std::string_view method, target;
    int minor_version = 1;         // HTTP/1.minor_version: 0 or 1
    HttpHeader *headers = nullptr; // the caller's array
    size_t header_count = 0;
};

enum : int { http_incomplete = -2, http_malformed = -1 };
enum : size_t { http_max_target = 8192, http_max_header_block = 16384, http_max_headers = 100 };

// Parses the request head (request line and header fields) at buf[0, len).
// Returns the head's length once it is complete (a body would start there),
// http_incomplete when more bytes are needed, or http_malformed with *status
// set to the answer it deserves: 400, 414 (target over http_max_target),
// 431 (header block over http_max_header_block, or more than max_headers
// fields) or 505 (a version other than HTTP/1.0 and HTTP/1.1). The views in
// *request point into buf; headers[0, max_headers) is the caller's array.
// Nothing is allocated. Feeding a prefix of a valid head never gives a
// different answer than feeding the whole: incomplete, or the same error.
int parse_request(const char *buf, size_t len, HttpRequest *request, HttpHeader *headers,
                  size_t max_headers, int *status);

// Framing and persistence of a parsed request, checked against RFC 9112.
struct HttpRequestInfo {
    std::string_view host;          // empty if absent
    bool chunked = false;           // Transfer-Encoding: chunked
    bool has_content_length = false;
    uint64_t content_length = 0;
    bool keep_alive = true;         // after this request
    bool expect_continue = false;   // Expect: 100-continue
};

// Checks Host (exactly one in HTTP/1.1, at most one in 1.0, well-formed),
// Content-Length (digits; several must agree), Transfer-Encoding (chunked
// only; never with Content-Length, never in HTTP/1.0) and Connection.
// Returns 0, or http_malformed with *status set, as parse_request does:
// 400, or 501 for a transfer coding other than chunked. Either error
// means: answer, then close.
int check_request(const HttpRequest &request, HttpRequestInfo *info, int *status);

// Decodes a chunked body as it arrives; keep one per body.
struct ChunkedDecoder {
    // Appends the data in in[0, len) to *out, stopping after the final
    // chunk and its trailers. Returns the bytes consumed, or http_malformed
    // when the coding is malformed or the body would pass max_body
    // (*too_large set).
    long feed(const char *in, size_t len, std::string *out, size_t max_body, bool *too_large);
    bool done() const;  // the final chunk and its trailers are in

private:
    int state_ = 0;  // where in the chunked grammar it is (named in prefork.cc)
    uint64_t remaining_ = 0;
    size_t line_ = 0;
};

// Percent-decodes a path into *out. false for a bad escape or a NUL (%00 or raw).
bool percent_decode(std::string_view in, std::string *out);

const char *http_reason(int status);  // "Not Found"; "" for unknown codes

struct HttpOptions {
    double request_timeout = 10;    // seconds for a whole request head: 408, close
    double keepalive_timeout = 5;   // seconds an idle keep-alive connection waits
    double send_timeout = 30;       // seconds a response may stall
    double min_rate = 500;          // bytes/s a body or a response must average
                                    // once its first timeout is spent
    double pressure_timeout = 0.5;  // seconds that replace the timeouts above
                                    // while no worker is idle and the pool is
                                    // at max_clients (see "slow clients")
    size_t max_body = 1 << 20;      // bytes; a bigger body is 413
    std::string server_name = "prefork";
    int access_log_fd = -1;         // Combined Log Format lines go here (-1: none);
                                    // buffered, written once per connection or 8 KiB
};

// What a route handler sees; views are valid during the call only.
struct HttpContext {
    std::string_view method, target, path, query;  // path is percent-decoded
    std::string_view raw_path;                     // path as sent
    int minor_version = 1;
    const HttpHeader *headers = nullptr;
    size_t header_count = 0;
    std::string_view body;
    std::vector<std::string_view> captures;  // the route regex's groups
    Worker *worker = nullptr;
    // The first field of that name (case-insensitive), or "" (null data).
    std::string_view header(std::string_view name) const;
};

class HttpResponse {
public:
    void status(int code) { status_ = code; }
    int status() const { return status_; }
    // Adds a field. false, and nothing added, for a name that is not a
    // token or a value with CR, LF or NUL: nothing a handler passes on can
    // split the response.
    bool header(std::string_view name, std::string_view value);
    void body(std::string_view data) { body_.append(data.data(), data.size()); }
    // Sends length bytes of the open file fd from offset (sendfile where
    // available) instead of a body; the response closes fd.
    void file(int fd, uint64_t offset, uint64_t length);
    void close_connection() { close_ = true; }
    ~HttpResponse() { file(-1, 0, 0); }

private:
    friend struct HttpResponder;  // prefork.cc's responder reads and resets it
    int file_fd_ = -1;
    uint64_t file_offset_ = 0, file_length_ = 0;
    int status_ = 200;
    bool close_ = false;
    std::string fields_;  // "Name: value\r\n" lines
    std::string body_;
};

using HttpHandler = std::function<void(HttpContext &, HttpResponse &)>;

// An IPv4 or IPv6 network: "ADDRESS" (one host) or "ADDRESS/BITS".
struct AddressRange {
    int family = 0;                 // AF_INET or AF_INET6
    unsigned char bytes[16] = {};   // the address, network order
    int bits = 0;                   // prefix length
    // false (range untouched) for anything else: a name, bad bits, "".
    static bool parse(const std::string &text, AddressRange *range);
    // Whether address is in the range; an IPv4-mapped IPv6 address
    // (::ffff:a.b.c.d) is taken as the IPv4 address it carries.
    bool contains(const sockaddr *address, socklen_t length) const;
};

// The HTTP/1.1 responder: routes requests to handlers by method and path
// regex, first match wins; no match is 404, a path matched only under
// other methods is 405 with Allow. Use it as the server's handler:
//   server.on_connection([&](Worker &w, int fd) { http.serve(w, fd); });
class HttpService {
public:
    explicit HttpService(const HttpOptions &options = HttpOptions());
    ~HttpService();
    HttpService(const HttpService &) = delete;
    HttpService &operator=(const HttpService &) = delete;

    // method "*" matches any; path_regex is POSIX extended, matched against
    // the percent-decoded path. 0, or -1 with error() for a bad regex. An
    // exception escaping the handler (built with exceptions) is logged with
    // the route and what(), answered 500, and the connection closed.
    int route(const std::string &method, const std::string &path_regex, HttpHandler handler);
    // Serves the files under docroot for every path not routed before: GET
    // and HEAD (else 405), index.html for a directory (a path without its
    // final "/" is redirected), ETag and Last-Modified with 304, one byte
    // range (206, 416). Dotfiles, "..", "//", backslashes and symlinks
    // (none is followed) are never served. 0, or -1 with error().
    int serve_directory(const std::string &docroot);
    // Answers GET path with the scoreboard: an HTML page, "?auto" in Apache
    // mod_status's machine-readable format, "?json". Only clients in
    // `allow` get it, others 403; an empty list means loopback only
    // (127.0.0.0/8 and ::1). Clients over a UNIX socket always get it.
    // 0, or -1 with error().
    int serve_status(const std::string &path, const std::vector<AddressRange> &allow = {});
    // Serves one connection until it closes, times out, or the worker
    // should stop. Never throws, never exits.
    void serve(Worker &worker, int fd);
    // Answers 503 (Retry-After: 1) without reading the request, logs it,
    // and returns: the handler for Server::on_refusal().
    void refuse(Worker &worker, int fd);
    const std::string &error() const { return error_; }
    const HttpOptions &options() const { return options_; }

private:
    struct Internals;  // routes and reused buffers, defined in prefork.cc
    HttpOptions options_;
    std::string error_;
    std::unique_ptr<Internals> in_;
};

}  // namespace prefork

#endif
