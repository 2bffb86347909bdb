/* prefork.h - prefork 0.1.0 - a preforking server toolkit in two files.

   A parent process keeps a pool of worker processes that accept connections
   on shared listening sockets and hand each one to your handler.

   WHAT IT IS
     Vendor prefork.h and prefork.cc, compile them with C++17, link nothing
     else: libc and the C++ standard library are all it uses. The parent is a
     single poll() loop fed by a self-pipe; the scoreboard is System V shared
     memory guarded by a System V semaphore taken with SEM_UNDO, so a worker
     killed while holding the lock cannot wedge the pool. An HTTP/1.1
     responder and its request parser come with it. Everything is in
     namespace prefork. The library never exits and never prints: it
     returns errors, and logs through a sink the program gives it.

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

   ERRORS (one convention per layer; the entries below do not repeat it)
     The pool and the responder: the calls that can fail (Server's listen,
     listen_fd, listen_inherited, enable_upgrade and run; HttpService's
     route, serve_directory, serve_status, serve_cgi, allow_from,
     deny_from and require_auth) return 0 (listen_inherited: a count), or
     -1 with one sentence in that object's error(), which keeps the last
     failure's. Scoreboard::create returns 0, or -1 with the
     sentence in *error; Scoreboard::lock and unlock return 0, or -1 with
     errno set; Worker::wait returns 1 (ready) or 0 (timed out), or -1
     with errno set (ECANCELED: the worker should stop). drop_privileges
     returns 0, or -1 with the sentence in *error.
     The HTTP parsers return the bytes they consumed (check_request: 0), or
     http_malformed (-1) with *status set to the answer the request deserves
     (400, 414, 431, 501, 505): answer it, then close. parse_request may also
     return http_incomplete (-2): call again with more bytes.
     ChunkedDecoder::feed has no status: http_malformed means 400, or 413
     with *too_large set.
     Yes-or-no checks return bool: percent_decode, AddressRange::parse and
     contains, HttpResponse::header and write, HttpContext::param and
     client_gone.
     check_options returns "" when the options are usable, else one
     sentence naming the bad one.
     Passwords: check_password and PasswordFile::check return a
     PasswordVerdict (anything but match refuses; check also leaves one
     sentence in error() to log); PasswordFile::refresh returns 0, or -1
     with the sentence in error().
     Built with exceptions, one escaping a connection handler, an init hook,
     a route handler or an on_error() hook is caught and logged (see each);
     on_ready(), on_reopen() and on_restart() hooks must not throw.

   API: THE SERVER (the parent; set it up, then run())
     Server(options)           Keeps a copy of the options (see OPTIONS).
                               Not copyable; runs once; destroying it closes
                               its listeners.
     server.listen(spec)       Binds "PORT", "HOST:PORT", "[V6]:PORT" or
                               "unix:PATH" now, in the calling process; port
                               0 picks a free one (see address(i)). A dead
                               server's socket file is replaced; run()
                               removes the files it made as it returns.
     server.listen_fd(fd)      Adopts an already-listening socket; the Server
                               closes it at the end, and a graceful stop
                               leaves it listening.
     server.listen_inherited() Adopts the sockets passed in LISTEN_FDS (by
                               systemd, or by the old parent of an
                               upgrade) and removes LISTEN_* from the
                               environment; a later listen() of the same
                               address takes the passed socket instead of
                               binding. Returns how many (0: none for us).
     server.enable_upgrade(argc, argv)
                               SIGUSR2 then runs argv again (the binary on
                               disk by then) and hands it the listeners,
                               which it takes with listen_inherited(); see
                               SIGNALS. No effect in single_process mode.
     server.upgrading()        True in the new program of an upgrade until
                               the old parent has handed over.
     server.listener_count(), server.address(i), server.port(i)
                               The listeners in the order added, as bound
                               ("127.0.0.1:8080", "unix:/run/x"; port 0 for
                               UNIX sockets); i < listener_count().
     server.on_connection(h)   Required. h(worker, fd) (a ConnectionHandler)
                               serves one accepted connection in a worker;
                               fd is a blocking socket without timeouts (a
                               read() waits for the client as long as it
                               takes: wait with worker.wait()), close-on-
                               exec, and the library closes it when h
                               returns. An
                               exception escaping h is logged and closes
                               fd; the worker goes on.
     server.on_refusal(h)      h gets the connections over
                               max_clients_per_ip instead (default: closed
                               at once); it should answer briefly.
     server.on_worker_start(h) Adds an init hook (InitHook: bool(Worker &)),
                               run in every new worker before it accepts,
                               never in the parent (DB handles...).
                               Returning false or throwing fails the worker.
     server.on_ready(h)        h() runs once, when start_servers workers (at
                               least 1, at most max_spare_servers) are first
                               ready; in the parent (in single_process mode,
                               the one process). false stops the server and
                               run() returns -1.
     server.on_reopen(h)       h() runs in the parent on SIGUSR1: reopen the
                               log files onto the same descriptors (open,
                               then dup2); the workers are then replaced.
     server.on_restart(h)      h() runs in the parent on SIGHUP, before the
                               new generation is forked: what it changes
                               (say, http.set_options()) the new workers
                               inherit.
     server.on_log(f)          Where log lines go (see LogFn); without a
                               sink the library is silent.
     server.log(level, fmt, ...)
                               printf-style, through that sink.
     server.run()              Runs the pool until SIGTERM (graceful) or
                               SIGINT (now), then returns 0 in the parent;
                               a worker never returns from it (it leaves
                               with _exit()). Fails at once for bad options,
                               no listener, no on_connection() handler, or
                               another Server running in this process; later
                               when on_ready() says false or
                               shutdown_on_error stops it. While the
                               scoreboard cannot be had it logs and retries
                               every ipc_retry_interval. Its signal handlers
                               are installed for its duration only.
     server.is_child()         True in a forked worker; false in the parent
                               and in single_process mode.
     server.snapshot()         Copies the scoreboard (parent or worker; empty
                               outside run()).
     server.options()          The options in use: after check_options()'s
                               changes and SIGTTIN/SIGTTOU's.
     server.error()            The last failure's sentence.

   API: THE WORKER (the Worker & that handlers and init hooks get)
     worker.slot(), generation()
                               Its scoreboard slot (0 in single_process
                               mode) and generation (1, then one more at
                               each graceful restart).
     worker.is_child()         True in a forked worker; false in
                               single_process mode.
     worker.heartbeat()        Tells the watchdog (timeout) a long handler
                               is alive.
     worker.stopping()         True once the worker should finish up: the
                               server drains or restarts, the worker got
                               SIGTERM, or the parent died (the last two
                               are seen within 10 ms). Check it between
                               requests.
     worker.wait(fd, events, timeout_ms)
                               Waits until fd is ready for events (POLLIN,
                               POLLOUT: a read or write will not block),
                               timeout_ms passes (-1: no bound) or the
                               worker should stop (see ERRORS), whichever
                               is first. The stop is seen at once (SIGTERM is let in for the
                               wait, the parent's death is watched) and
                               comes first: on entry too, and over a ready
                               fd. Reports to the watchdog while it waits.
                               Call it from the handler's thread, to wait
                               for a client's next command; in a stop,
                               write a last answer with plain write().
     worker.stop_reason(&deadline_ms)
                               Why the worker should stop (a StopReason)
                               and, in *deadline_ms unless null, when
                               SIGKILL comes (CLOCK_MONOTONIC ms; 0 when
                               nothing will kill it): none, not stopping;
                               restart (SIGHUP or SIGUSR1: finish the work
                               in hand, graceful_timeout after the
                               restart); drain (the server stops: when its
                               graceful_timeout ends; 0 in single_process
                               mode); retire (a spare too many:
                               graceful_timeout); timeout (the watchdog:
                               kill_grace); parent_gone (0); signal (a
                               SIGTERM from outside the pool; 0). When
                               two apply, the one that kills first.
     worker.pool_full()        True when no worker is idle and max_clients
                               are running: the moment to close idle
                               keep-alive connections so new clients get
                               in. Always false in single_process mode.
     worker.stop_listening(), start_listening(), listening()
                               Pause / resume accepting in this worker only
                               (safe from another thread of the worker), and
                               whether it accepts. A paused worker is not
                               counted as a spare.
     worker.count_request(line, bytes)
                               Records one request in the scoreboard (and
                               counts as a heartbeat); line may be null.
     worker.note_request(line) Shows the request being served (cut to 79
                               bytes).
     worker.set_activity(c)    The letter the scoreboard shows while busy
                               ('W' unless set; 'R', 'K'... as in Apache).
     worker.peer(), peer_length(), listener()
                               The connection being served: its peer
                               address (length 0 if unknown) and the index
                               of the listener that took it.
     worker.scoreboard()       The shared Scoreboard.
     worker.log(level, fmt, ...)
                               As server.log().

   API: THE SCOREBOARD (run() makes one; reach it through a Worker)
     Scoreboard board;         Empty until create(); not copyable; the
                               destructor calls destroy().
     board.create(slots, &error, log)
                               Makes the shared memory segment (marked for
                               removal at once: it lives while a process is
                               attached) and the semaphore set for `slots`
                               slots. First removes semaphore sets left by
                               a dead parent (Linux), logging each through
                               log when given.
     board.destroy()           Detaches; in the creating process it also
                               removes the semaphore set.
     board.ready(), slot_count()
                               Whether it is attached; its slots (0 if not).
     board.lock(ms), unlock()  The SEM_UNDO lock, waiting at most ms (-1: no
                               bound); errno EAGAIN when the wait ran out,
                               EIDRM or EINVAL when the set is gone.
     board.snapshot()          A copy made under the lock; after 50 ms of
                               waiting it copies without it rather than hang
                               behind a stuck holder. Empty if not ready.
     board.slot(i)             Slot i in shared memory (i < slot_count(),
                               unchecked). Only its worker writes it, except
                               that the parent claims and frees it.
     Snapshot                  now_ms and uptime_ms (CLOCK_MONOTONIC ms; since
                               the board was made), generation (the current
                               one), the starting, idle, busy and exiting
                               worker counts, connections, requests and
                               bytes (all workers since the board was made,
                               dead ones included) and slots (a copy of each;
                               run() makes max_clients, 1 in single_process
                               mode).
     Snapshot::letter(slot)    Apache's letter: '.' free, 'S' starting, '_'
                               idle, the activity while busy ('W' unless
                               set), 'G' exiting.
     snapshot.render()         "gen 2: 3 busy, 4 idle, 0 starting, 0
                               exiting; 120 connections, 130 requests", a
                               newline, then one letter per slot.
     Slot                      One worker's record, trivially copyable: pid;
                               state (SlotState: free, starting, idle, busy,
                               exiting); activity; generation; started_ms,
                               heartbeat_ms and busy_since_ms (CLOCK_MONOTONIC
                               ms); connections, requests and bytes (this
                               worker's); request (the last request line,
                               NUL-terminated, cut short); client_family and
                               client (with max_clients_per_ip set, the
                               client's address while busy, AF_INET or
                               AF_INET6, IPv4-mapped ones as IPv4; else 0).
                               flags and request_seq are the library's.

   API: LOGGING, PRIVILEGES AND EXEC
     LogLevel                  debug, info, notice, warning, error.
     LogFn                     void(LogLevel, const char *message): a sink
                               gets one line without its newline, in the
                               process that logs (the parent or a worker).
     log_to_stderr             A ready-made sink: "2026-11-22 17:46:11
                               [notice] [pid 123] message" (local time) in
                               one write(2), so lines from several processes
                               do not interleave; cut at 1200 bytes.
     log_to_stderr_at(least)   A LogFn that is log_to_stderr for lines of
                               level least and above, and drops the rest:
                               log_to_stderr_at(LogLevel::info) hides debug.
     log_level_name(level)     "debug" ... "error".
     drop_privileges(user, &error)
                               Makes the whole process user (a name in the
                               passwd database): its groups (initgroups),
                               then its group id, then its user id; then
                               checks that setuid(0) fails. Does nothing
                               when the effective uid is user's already.
                               Call it in the parent after listen(), before
                               run(), so every worker inherits it; on
                               failure the process may be half changed:
                               exit. error: "cannot become user NAME:
                               no such user" (or strerror's text).
     reset_signals_for_exec()  For a handler about to exec in a child it
                               forked: unblocks every signal and restores
                               the default disposition of those prefork
                               handles. A worker blocks SIGTERM and ignores
                               SIGPIPE, SIGHUP, SIGUSR1, SIGUSR2, SIGTTIN and
                               SIGTTOU, and all of that would survive exec.

   HTTP
     HttpService http(http_options);
     http.route("GET", "^/hello/([a-z]+)$", [](HttpContext &c, HttpResponse &r) {
         r.body("hi " + std::string(c.captures[0]) + "\n");
     });
     http.serve_status("/server-status");   // HTML, ?auto (mod_status), ?json;
                                            // loopback clients only unless told
     http.serve_directory("/var/www");      // static files for the rest
     server.on_connection([&](Worker &w, int fd) { http.serve(w, fd); });
     server.on_refusal([&](Worker &w, int fd) { http.refuse(w, fd); });

     HttpService(http_options) The responder. Make it before run(), so that
                               every worker inherits its routes; not
                               copyable.
     http.route(method, path_regex, h)
                               Routes to h (HttpHandler: void(HttpContext &,
                               HttpResponse &)). method "*" matches any,
                               "GET" HEAD too, else an uppercase token
                               (refused: a lowercase or empty method, a
                               null h, over 9 groups); path_regex is POSIX
                               extended, matched against the percent-decoded
                               path. First match wins; c.captures has one
                               entry per group (empty for a group that took
                               no part). No match: the static files (see
                               serve_directory), else 404; a path matched only
                               under other methods: 405 with Allow. An
                               exception escaping h, or a status outside
                               100-599, is logged, answered 500, and the
                               connection closed. "OPTIONS *" is answered
                               204, Allow naming every method a route
                               names; "*" with another method is 400, and
                               so is a path with a "." or ".." segment
                               (after percent-decoding: clients remove
                               them before sending, RFC 3986 5.2.4), which
                               no route or file sees.
     http.serve_directory(prefix, docroot), serve_directory(docroot)
                               Opens docroot now and serves the files under
                               it at prefix ("/" in the second form): under
                               "/static/", /static/css/a.css is
                               docroot/css/a.css, and /static is redirected
                               to /static/. The files answer only the paths
                               no route matches under any method, whatever
                               the order of the calls; the longest prefix
                               holding a path wins. A prefix starts and ends
                               with "/" and has no empty segment nor one
                               starting with "."; any other, or one
                               served already, is refused. GET and HEAD
                               (else 405), index.html for a directory (a
                               path without its final "/" is redirected),
                               ETag and Last-Modified with 304, one byte
                               range (206, 416). Dotfiles, "..", "//",
                               backslashes and symlinks (none is followed)
                               are never served. With precompressed (see
                               HttpOptions), NAME.br or NAME.gz beside a
                               file (a regular file, opened as files are)
                               goes in its place to a client whose
                               Accept-Encoding takes that coding (by q,
                               "*" and x-gzip understood; NAME itself, if
                               neither named nor "*", ranks last, and at
                               equal q br goes before gzip before NAME),
                               with Content-Encoding, NAME's Content-Type
                               and an ETag of its own; conditions and
                               ranges apply to it. Every file but a
                               NAME.gz or NAME.br itself gets Vary:
                               Accept-Encoding.
                               With autoindex, a directory without
                               index.html gets a listing (else 403): an
                               HTML table of "../" (but at "/"), the
                               directories (with a final "/"), then the
                               files, each part sorted by name bytewise,
                               with modification times (UTC) and sizes;
                               names HTML-escaped, links percent-encoded.
                               Only what could be served is listed: no
                               dotfile, no symlink, nothing but regular
                               files and directories, read through the
                               descriptor opened as files are.
                               Each worker keeps the files it serves, small
                               ones in memory (file_cache in HttpOptions):
                               a kept-alive request for one is a recv and a
                               send; a change on disk shows within a second.
     http.serve_status(path, allow)
                               Answers GET path with the scoreboard: HTML,
                               "?auto" in mod_status's machine-readable
                               format, "?json". Only clients in allow (a
                               vector of AddressRange) get it, others 403;
                               none given: loopback only (127.0.0.0/8, ::1).
                               Clients over a UNIX socket always get it.
     http.serve_cgi(prefix, directory)
                               Runs the executable files beneath directory
                               as CGI/1.1 scripts (RFC 3875) for prefix +
                               name [+ /path/info] [+ ?query], any method
                               (prefix as for serve_directory). A script is
                               found as a static file is (404; 403 for a
                               directory, a symlink or a file without x)
                               and runs in its own process group, in its
                               directory, with descriptors 0-2 only and
                               the RFC's meta-variables (DOCUMENT_ROOT is
                               the directory served at "/", else
                               directory), REQUEST_URI, SCRIPT_FILENAME,
                               REMOTE_PORT, REDIRECT_STATUS=200, a PATH and
                               HTTP_* for the fields but Proxy and
                               Authorization; nothing else of the
                               environment. The body (de-chunked) is its
                               stdin. Its head's Status, Location (a local
                               path is served instead, as a GET; a URL is
                               a 302) and other fields, but not framing,
                               make the response, and the rest is streamed
                               (r.write); an nph-NAME script's output is
                               the response as it is. Its stderr is logged
                               a line at a time. It is killed with its
                               group past cgi_timeout (504 before its
                               head), when its client leaves, or half a
                               second before the worker's stop would kill
                               the worker (503; it runs on through a
                               graceful restart until then); (Linux) it
                               dies with a worker killed outright. A head
                               that is malformed, missing or over 16 KiB
                               is 502. A prefix served by files or CGI
                               already is refused (both ways).
     http.on_error(render)     Renders the library's own answers from 400
                               on, never a handler's: 404 and 405 from
                               routing, 500 for a failed handler, the
                               static files' 403, 404, 405 and 416, the
                               status page's 403, the responder's 400,
                               408, 413, 414, 431, 501 and 505, refuse()'s
                               503. render is void(const HttpContext *c,
                               int status, HttpResponse &r); c is null for
                               the answers given before a request is
                               routed (the responder's and refuse()'s). r
                               is a response of render's own, with the
                               status set: its body and fields (header()'s
                               rules hold) go out after the library's own
                               fields (Allow, Content-Range, Retry-After),
                               and the status stays: a status render
                               sets, a file it gives (closed) and
                               close_connection() are ignored. A render
                               that throws is logged, and the default body
                               goes out ("404 Not Found\n", text/plain).
                               HEAD still gets no body.
     http.allow_from(prefix, range), deny_from(prefix, range)
                               Access rules by client address (prefix as
                               for serve_directory; "/" for all): the rules
                               of the longest prefix that has any and
                               holds the path decide, the first in the
                               order given whose range holds the client;
                               when none does, a prefix with an allow rule
                               refuses, one with deny rules only lets in.
                               Refused: 403, before routing. No rule
                               applies to clients over a UNIX socket.
     http.require_auth(prefix, password_file, realm)
                               Basic auth (RFC 7617) for every request whose
                               percent-decoded path is under prefix (a
                               string starting with "/"; "/admin" is also
                               under "/admin/"; the longest protected
                               prefix decides), after the access rules:
                               the credentials
                               are checked by a PasswordFile of
                               password_file, read now (an unreadable file
                               fails) and again when it changes; a missing
                               or wrong one gets 401 with WWW-Authenticate:
                               Basic realm="realm" (no quote, backslash or
                               control character in it; a prefix given
                               twice fails). A failed attempt is logged
                               (warning; error for an entry that cannot be
                               checked) with the user name and the peer,
                               never the password; the user who passed
                               fills the access log's third field.
     http.serve(worker, fd)    Serves one connection (keep-alive, pipelining,
                               100-continue, chunked bodies) until the
                               client closes, a timeout or an error answer,
                               or, between requests, until the worker should
                               stop or the pool is full. Never throws.
     http.refuse(worker, fd)   Answers 503 (Retry-After: 1) without reading
                               the request, and logs it: the handler for
                               on_refusal().
     http.error(), options()   The last failure's sentence; the HttpOptions.
     http.set_options(o)       Replaces them for the connections this
                               process serves from now on (workers forked
                               later inherit them: call it from
                               on_restart()); routes and mounts stay.
     HttpContext c             What h sees; views valid during the call only:
                               c.method, c.target and c.raw_path (the path)
                               as sent, c.path (percent-decoded), c.query
                               (after "?"; empty if none), c.minor_version,
                               c.headers[0, c.header_count), c.body (whole,
                               de-chunked), c.captures, c.worker.
                               c.header(name) is the first field of that
                               name (case-insensitive), or "" (null data).
                               c.param(name, &value): true with value set
                               for the query's first "name=value" (or bare
                               "name": value "") whose name, form-decoded
                               ("+" a space, then %XX), is name; false,
                               value cleared, when there is none. A pair
                               that does not decode (a bad escape, a NUL)
                               is skipped, as if absent.
                               c.peer() is the client's address, computed
                               per call: "127.0.0.1", "::1" (no port, no
                               brackets), "unix" over a UNIX socket, ""
                               when unknown.
                               c.fd is the connection, to wait on (say,
                               c.worker->wait(c.fd, POLLIN, ms) while
                               working); reading or writing it breaks the
                               framing. c.client_gone() is true once the
                               client closed or reset the connection (a
                               peek; pipelined bytes stay).
     HttpResponse r            r.status(code) [200] sets it, r.status()
                               reads it; r.header(name, value) adds a field
                               (false, nothing added, for a name that is not
                               a token, a value with CR, LF or NUL, or the
                               responder's framing: Content-Length,
                               Transfer-Encoding, Connection); a Date or
                               Server field replaces the responder's (a
                               second one is refused);
                               r.body(data) appends; r.file(fd, offset,
                               length) sends that much of the open file fd
                               instead of a body (the response owns fd; fd
                               must be a regular file, else the answer is
                               500, fd is closed and the route is logged);
                               r.close_connection() closes after this
                               answer. The responder adds Date, Server,
                               Content-Length, Connection as needed and,
                               for a body without one, Content-Type
                               text/plain; HEAD, 1xx, 204 and 304 get no
                               body.
                               r.write(data) streams a body of unknown
                               length: the first call sends the head
                               (chunked in HTTP/1.1; in HTTP/1.0 the body
                               ends at the close), then each call sends
                               what body() holds and data at once, as one
                               chunk; the last chunk goes when h returns.
                               After the head, status() and header() have
                               no effect (header() returns false). Each
                               call may stall send_timeout (min_rate) on
                               the client, and gives up at once when the
                               worker should stop while it waits on the
                               client; it counts as a heartbeat. A stop
                               does not end a stream that flows: a handler
                               that writes without end checks
                               c.worker->stopping() (a graceful restart
                               kills it after graceful_timeout). write()
                               returns false when the stream is cut (the
                               client is gone or too slow; the connection
                               closes without the last chunk) and, the
                               response ending whole, once the head went
                               out for HEAD, 204 or 304: h should then
                               return. false, nothing sent, while a file
                               is set or for a status outside 100-599. An
                               exception (or a file) after the head cuts
                               the stream and is logged.
                               r.abort() ends the response short: after
                               the head, no last chunk (the client sees it
                               incomplete) and the connection closes;
                               before it, the answer is 500.
     AddressRange              An IPv4 or IPv6 network: family, bytes (the
                               address, network order), bits.
                               AddressRange::parse(text, &range) reads
                               "ADDRESS" or "ADDRESS/BITS" (false, range
                               untouched, for anything else);
                               range.contains(address, length) takes an
                               IPv4-mapped IPv6 address as the IPv4 one.
     check_password(password, hash)
                               One htpasswd entry's hash against a password:
                               a PasswordVerdict, match or mismatch, or
                               unusable for a plaintext, malformed or
                               unknown entry (never matched). Schemes:
                               bcrypt ($2y$, $2b$, $2a$; cost 04-31; only
                               72 bytes of password count), Apache MD5
                               ($apr1$), MD5-crypt ($1$), SHA-256-crypt and
                               SHA-512-crypt ($5$, $6$; "rounds=" 1000 to
                               999999999, default 5000) and {SHA}. Compared
                               in constant time. A bcrypt check costs
                               2^cost Blowfish key set-ups (see PasswordFile).
     PasswordFile f(path)      An htpasswd file, read when first needed and
                               again whenever its device, inode, size, mtime
                               or ctime change (one stat() per check).
                               Lines are "user:hash[:ignored]"; a CR before
                               the LF is dropped; blank lines, "#" comments
                               and lines without ":" or a user are skipped;
                               of a user's repeated lines the first counts.
                               Moves, not copies; not thread-safe (one per
                               thread, or a lock).
     f.check(user, password)   A PasswordVerdict: match, or, with one
                               sentence in f.error() naming the user and
                               the file (never the password), mismatch,
                               unknown_user, or unusable (the user's entry
                               is not a hash check_password takes, or the
                               file cannot be read). A match is remembered
                               beside the user's entry as a salted SHA-256
                               of the password (never the password; 32
                               bytes a user) until the file changes, so a
                               kept-alive client does not pay bcrypt again;
                               a failure never is.
     f.refresh()               Reads the file now if it changed (check()
                               does so itself); -1 while it cannot be read.
     f.users(), path(), error()
                               How many "user:hash" lines it read, its
                               path, the last failure's sentence.

   The parser, usable on its own: pico-shaped, views into the caller's
   buffer, the caller's header array, bounded sizes, no allocation; strict
   RFC 9112 (one SP between the request line's parts, no obs-fold; a bare
   LF ends a line as CRLF does).
     HttpHeader, HttpRequest   name and value (trimmed); method, target,
                               minor_version (HTTP/1.0 or 1.1), headers (the
                               caller's array) and header_count.
     parse_request(buf, len, &request, headers, max_headers, &status)
                               Parses the head at buf[0, len): returns its
                               length (a body starts there). status 400, 414
                               (target over http_max_target, 8192), 431
                               (head over http_max_header_block, 16384, or
                               over max_headers fields) or 505 (a version
                               other than 1.0 and 1.1). A prefix of a head
                               is incomplete or gets the whole head's error.
                               http_max_headers (100) is the responder's
                               max_headers.
     check_request(request, &info, &status)
                               Checks Host (one in HTTP/1.1, at most one in
                               1.0), Content-Length (digits; repeats agree)
                               and Transfer-Encoding (chunked only, else
                               501; never with Content-Length or in 1.0),
                               and fills info (HttpRequestInfo): host (""
                               if absent), chunked, has_content_length,
                               content_length, keep_alive (after this
                               request), expect_continue.
     ChunkedDecoder d          One per chunked body. d.feed(in, len, &out,
                               max_body, &too_large) decodes in[0, len)
                               onto the end of out and returns the bytes used,
                               stopping after the last chunk and trailers
                               (d.done() is then true); http_malformed for a malformed
                               coding, or, too_large set, a body over
                               max_body.
     percent_decode(in, &out)  out = in with %XX decoded; false for a bad
                               escape or a NUL (%00 or raw).
     http_reason(status)       "Not Found": RFC 9110's table, and 428, 429,
                               431 (RFC 6585); "" for a code it does not
                               know.

   HttpOptions (defaults in brackets)
     request_timeout [10 s]     A request head must be whole within it (else
                                408); a body may stall this long.
     keepalive_timeout [5 s]    An idle keep-alive connection waits this long
                                for its next request.
     send_timeout [30 s]        A response may stall this long.
     min_rate [500 bytes/s]     What a body or a response must average once
                                its first timeout is spent.
     pressure_timeout [0.5 s]   Caps the timeouts above while the pool is full
                                (see slow clients).
     max_body [1 MiB]           A bigger body is 413.
     cgi_timeout [60 s]         A CGI script may run this long.
     server_name ["prefork/0.1.0"]
                                The Server field and the status page's name
                                (its ServerVersion line: keep the form
                                Product/X.Y.Z, which apache_exporter needs).
     access_log_fd [-1]         Combined Log Format lines go there (-1:
                                none), buffered: written once per connection
                                or 8 KiB.
     precompressed [true]       Static files: NAME.br or NAME.gz goes in
                                NAME's place to the clients that take it
                                (see serve_directory).
     autoindex [false]          Static files: a directory without
                                index.html gets a listing instead of 403
                                (see serve_directory).
     file_cache [64 KiB]        Static files: each worker keeps the files it
                                serves, a copy of up to 16 KiB in memory
                                (up to this many bytes in all, in one
                                block made with the service, at most
                                4 MiB: a worker touches only the pages
                                its entries fill, and no malloc), a bigger
                                one as an open descriptor, the least
                                recently used making room (64 entries at
                                most), and answers without opening or
                                stat'ing anything; an entry is read again
                                once it is a second old, so a change on disk
                                is served within a second. 0: none.
   Slow clients: every wait on a client is bounded. While the pool is full
   (no idle worker, max_clients reached), pressure_timeout caps them all: a
   client too slow to earn its worker gives it up to those waiting in the
   listen queue, and an idle keep-alive connection is closed at once.

   OPTIONS (struct Options; defaults in brackets)
     check_options(options, &notes) refuses (see ERRORS) a number out of its
     range (no count below 0; min_spare_servers, max_spare_servers,
     max_clients and listen_backlog at least 1; times finite, up to 1000000
     s) and max_requests_jitter without max_requests_per_child. It makes two
     changes, each described in notes when notes is not null: start_servers
     above max_clients becomes max_clients, and max_spare_servers below
     min_spare_servers becomes min_spare_servers + 1. run() calls it on its
     own copy, fails on a refusal, and logs the notes.
     start_servers [5]          Workers forked at start.
     min_spare_servers [5]      Idle workers kept ready. A worker turning busy
     max_spare_servers [10]     wakes the parent at once when idle ones fall
                                below the minimum. Above the maximum for a
                                second, the oldest idle worker is retired,
                                then one every 250 ms.
     max_clients [256]          Never more workers; extra connections wait in
                                the listen backlog.
     listen_backlog [511]       The backlog given to listen(2).
     max_requests_per_child [0] Connections a worker serves before it is
     max_requests_jitter [0]    replaced (0 = no limit), plus a random 0..N.
     max_rss_kib [0]            Replace a worker whose peak resident memory
                                passed this after a connection (0 = off).
     timeout [0]                Seconds a worker may go without a heartbeat
                                (busy: per connection, heartbeat(),
                                count_request() or wait(); idle: the
                                worker reports by itself; starting: until
                                it is ready) before SIGTERM (0 = off),
     kill_grace [2]             then SIGKILL this many seconds later.
     graceful_timeout [30]      Bound on a graceful stop or restart; workers
                                still busy then are killed.
     shutdown_on_error [false]  Stop the server (run() returns -1) when a
                                worker cannot be started (fork failed, or it
                                died before it was ready, as when an init
                                hook fails) instead of retrying with back-off.
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
                                until then. By hand: no libsystemd. Not in
                                single_process mode.
     upgrade_timeout [60]       Seconds the new program of a SIGUSR2 upgrade
                                has to get its workers ready (see SIGNALS)
                                before it is stopped and the upgrade given up.
     defer_accept [0]           Seconds a new TCP connection may wait in the
                                kernel for its first bytes before a worker
                                accepts it (Linux TCP_DEFER_ACCEPT; 0 = off;
                                sockets bound by listen() only). Only for
                                protocols where the client speaks first, such
                                as HTTP: a worker then never waits for a
                                silent client to begin.
     batch_scheduling [false]   Workers run as batch processes (Linux
                                SCHED_BATCH; elsewhere nothing) unless
                                forked with a policy other than the normal
                                one: a worker woken by a connection or a
                                request does not preempt the one running on
                                its core, which finishes first. Under load on
                                a busy core that saves a context switch and
                                an interrupt per wake-up; the cost is that a
                                worker waits for a process running long on
                                its core until the scheduler's next slice (a
                                few ms) instead of preempting it. Processes
                                a handler starts (CGI) inherit it. Not in
                                single_process mode.
     single_process [false]     No fork: the worker loop runs in run()'s own
                                process (debugging, deterministic tests),
                                with one slot. The init hooks, on_ready() and
                                the handler run as in a pool; what a parent
                                does does not happen: no spares, watchdog,
                                recycling, restart, upgrade, systemd
                                notification, batch scheduling or
                                scoreboard log.
     debug_scoreboard [false]   Log the scoreboard every second (debug).

   SIGNALS (to the parent)
     SIGTERM  graceful stop: refuse new connections at once (on Linux,
              shutdown(2) of the listeners this server bound, which stops
              them for every process; the connections already queued are
              accepted first and served by drain workers), finish in-flight
              connections (bounded by graceful_timeout); run() returns 0.
              Sockets from listen_fd() or a service manager stay listening,
              and so do all while an upgrade's new parent shares them.
     SIGINT   stop now: workers are killed, queued connections dropped.
     SIGHUP   graceful restart: keep the listeners, start a new generation,
              old workers finish their connection and exit.
     SIGUSR2  binary upgrade (with enable_upgrade()): fork and exec the
              command with the listeners as fds 3... (LISTEN_FDS,
              LISTEN_PID; LISTEN_FDNAMES "owned" for a UNIX socket whose
              file this parent made, "bound" for another socket it bound,
              "passed" for one a service manager passed) and one end of a
              socket pair after them (PREFORK_UPGRADE_FD). The new parent
              adopts them with listen_inherited(), starts its pool and,
              once start_servers workers (at most max_spare_servers) are
              ready, runs the on_ready() hook and writes 'R'. This parent
              answers 'A' and drains; run() returns 0 while the new
              parent, still its child, serves on: just exit. Only after
              'A' does the new parent own the socket files and speak to
              systemd. If it exits, cannot be executed or is not ready
              within upgrade_timeout, it is stopped and this parent serves
              on. A SIGUSR2 while an upgrade is under way is ignored.
     SIGTTIN  raise min and max spare by one; SIGTTOU lowers them (min stays
              at least 1).
     SIGUSR1  reopen the logs: the on_reopen() hook, then a graceful
              restart so that new workers inherit the new files. Without
              the hook it does nothing.
     SIGCHLD  reap, log, and replace workers.
     Once a stop has begun, SIGHUP, SIGUSR1 and SIGUSR2 are ignored.
     Workers are signalled by pid only, never through the process group.
     A worker takes SIGTERM between connections only: it stays blocked while
     a handler runs, so it never interrupts the handler's system calls,
     worker.stopping() reports it, and worker.wait() lets it in. In single_process mode only SIGTERM and
     SIGINT act: either ends run() once the connection in hand is served,
     and the connections still queued are reset.

   PORTABILITY
     POSIX with System V IPC. On Linux it also uses pipe2, accept4, ppoll,
     semtimedop, PR_SET_PDEATHSIG, SEM_STAT (to remove a semaphore set left
     by a parent that was killed with SIGKILL), epoll with EPOLLEXCLUSIVE
     (idle workers wait on the listeners so that a new connection wakes one
     of them, not all), TCP_DEFER_ACCEPT, openat2, sendfile and
     SCHED_BATCH; elsewhere poll(), a lock wait that polls every
     millisecond, getppid() for the parent's death, a component-by-component
     open and pread, and no sweep of stale semaphore sets. max_rss_kib is
     compared with getrusage()'s ru_maxrss, which macOS counts in bytes.
     Compiles with -fno-exceptions -fno-rtti. The parent uses fork(); keep
     it single-threaded.

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

// The declarations. Each contract is stated once, in the manual above.
namespace prefork {

enum class LogLevel { debug, info, notice, warning, error };

using LogFn = std::function<void(LogLevel, const char *message)>;

void log_to_stderr(LogLevel level, const char *message);
LogFn log_to_stderr_at(LogLevel least);
const char *log_level_name(LogLevel level);
int drop_privileges(const std::string &user, std::string *error);

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
    bool batch_scheduling = false;
    bool single_process = false;
    bool debug_scoreboard = false;
};

std::string check_options(Options &options, std::vector<std::string> *notes);

enum class SlotState : uint8_t { free, starting, idle, busy, exiting };

struct Slot {  // in shared memory: trivially copyable, fixed size
    int32_t pid;
    SlotState state;
    char activity;          // Apache letter while busy ('W' unless set)
    uint16_t flags;         // the library's bookkeeping (idle count, paused)
    uint32_t generation;
    uint32_t request_seq;   // odd while request[] is being written
    int64_t started_ms;     // CLOCK_MONOTONIC milliseconds
    int64_t heartbeat_ms;
    int64_t busy_since_ms;
    uint64_t connections;
    uint64_t requests;
    uint64_t bytes;
    char request[80];       // last request line, NUL-terminated, cut short
    uint8_t client_family;  // with max_clients_per_ip: AF_INET or AF_INET6 while
                            // busy with such a client, else 0
    uint8_t client[16];     // that client's address (IPv4-mapped ones as IPv4)
};

struct Snapshot {
    int64_t now_ms = 0;
    int64_t uptime_ms = 0;
    uint32_t generation = 0;
    int starting = 0, idle = 0, busy = 0, exiting = 0;
    uint64_t connections = 0, requests = 0, bytes = 0;  // all workers ever
    std::vector<Slot> slots;  // max_clients long (1 in single_process mode)

    static char letter(const Slot &slot);
    std::string render() const;
};

struct Shared;
class Worker;
class Server;
namespace detail {
struct ServerState;  // a Server's state, in prefork.cc
struct WorkerState;  // a worker's own state, in prefork.cc
struct Access;       // lets prefork.cc reach what users do not call
struct ResponseStream;  // a streamed HTTP response, in prefork.cc
}  // namespace detail

class Scoreboard {
public:
    Scoreboard() = default;
    ~Scoreboard();
    Scoreboard(const Scoreboard &) = delete;
    Scoreboard &operator=(const Scoreboard &) = delete;

    int create(int slots, std::string *error, const LogFn &log = LogFn());
    void destroy();
    bool ready() const { return shared_ != nullptr; }
    int slot_count() const;
    int lock(int timeout_ms = -1);
    int unlock();
    Snapshot snapshot();
    Slot &slot(int index);  // unchecked

private:
    friend struct detail::Access;
    Shared *shared_ = nullptr;
    int semaphore_id_ = -1;
    pid_t creator_ = 0;
};

using ConnectionHandler = std::function<void(Worker &, int fd)>;
using InitHook = std::function<bool(Worker &)>;

enum class StopReason : uint8_t { none, restart, drain, retire, timeout, parent_gone, signal };

class Worker {
public:
    int slot() const;
    uint32_t generation() const;
    bool is_child() const;
    void heartbeat();
    void stop_listening();
    void start_listening();
    bool listening() const;
    bool stopping() const;
    int wait(int fd, short events, int timeout_ms);
    StopReason stop_reason(int64_t *deadline_ms = nullptr) const;
    void count_request(const char *request_line, uint64_t bytes);
    void note_request(const char *request_line);
    void set_activity(char letter);
    const sockaddr_storage &peer() const;
    socklen_t peer_length() const;
    int listener() const;
    Scoreboard &scoreboard();
    bool pool_full() const;
    void log(LogLevel level, const char *format, ...)
        __attribute__((format(printf, 3, 4)));

private:
    friend struct detail::WorkerState;
    explicit Worker(detail::WorkerState *state) : in_(state) {}
    detail::WorkerState *in_;
};

class Server {
public:
    explicit Server(const Options &options = Options());
    ~Server();
    Server(const Server &) = delete;
    Server &operator=(const Server &) = delete;

    int listen(const std::string &spec);
    int listen_fd(int fd);
    int listen_inherited();
    bool upgrading() const;
    int enable_upgrade(int argc, char *const *argv);
    size_t listener_count() const;
    std::string address(size_t index) const;
    int port(size_t index) const;

    void on_connection(ConnectionHandler handler);
    void on_refusal(ConnectionHandler handler);
    void on_reopen(std::function<void()> hook);
    void on_restart(std::function<void()> hook);
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

private:
    std::unique_ptr<detail::ServerState> state_;
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

int parse_request(const char *buf, size_t len, HttpRequest *request, HttpHeader *headers,
                  size_t max_headers, int *status);

struct HttpRequestInfo {
    std::string_view host;          // empty if absent
    bool chunked = false;           // Transfer-Encoding: chunked
    bool has_content_length = false;
    uint64_t content_length = 0;
    bool keep_alive = true;         // after this request
    bool expect_continue = false;   // Expect: 100-continue
};

int check_request(const HttpRequest &request, HttpRequestInfo *info, int *status);

struct ChunkedDecoder {
    long feed(const char *in, size_t len, std::string *out, size_t max_body, bool *too_large);
    bool done() const;

private:
    int state_ = 0;  // where in the chunked grammar it is (named in prefork.cc)
    uint64_t remaining_ = 0;
    size_t line_ = 0;
};

bool percent_decode(std::string_view in, std::string *out);

const char *http_reason(int status);

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
    double cgi_timeout = 60;        // seconds a CGI script may run
    std::string server_name = "prefork/0.1.0";
    int access_log_fd = -1;         // Combined Log Format lines go here (-1: none);
                                    // buffered, written once per connection or 8 KiB
    bool precompressed = true;      // name.br or name.gz for name, when the client takes it
    bool autoindex = false;         // list a directory without index.html (else 403)
    size_t file_cache = 64 << 10;   // bytes of small files each worker keeps in memory (0: none)
};

struct HttpContext {  // views valid during the handler's call only
    std::string_view method, target, path, query;  // path is percent-decoded
    std::string_view raw_path;                     // path as sent
    int minor_version = 1;
    const HttpHeader *headers = nullptr;
    size_t header_count = 0;
    std::string_view body;
    std::vector<std::string_view> captures;  // the route regex's groups
    Worker *worker = nullptr;
    int fd = -1;  // the connection: to wait on, never to read or write
    std::string_view header(std::string_view name) const;
    bool param(std::string_view name, std::string *value) const;
    std::string peer() const;
    bool client_gone() const;
};

class HttpResponse {
public:
    void status(int code) { status_ = code; }
    int status() const { return status_; }
    bool header(std::string_view name, std::string_view value);
    void body(std::string_view data) { body_.append(data.data(), data.size()); }
    void file(int fd, uint64_t offset, uint64_t length);
    bool write(std::string_view data);
    void abort();
    void close_connection() { close_ = true; }
    ~HttpResponse() { file(-1, 0, 0); }

private:
    friend struct HttpResponder;  // prefork.cc's responder reads and resets it
    detail::ResponseStream *stream_ = nullptr;  // where write() sends, during a handler
    int file_fd_ = -1;
    uint64_t file_offset_ = 0, file_length_ = 0;
    int status_ = 200;
    bool close_ = false;
    bool file_regular_ = false;  // the responder knows file_fd_ is a regular file
    bool file_borrowed_ = false;  // file_fd_ is the file cache's: not closed here
    uint8_t replaced_ = 0;  // 1: the handler set Date, 2: Server
    std::string fields_;  // "Name: value\r\n" lines
    std::string body_;
};

using HttpHandler = std::function<void(HttpContext &, HttpResponse &)>;

struct AddressRange {
    int family = 0;                 // AF_INET or AF_INET6
    unsigned char bytes[16] = {};   // the address, network order
    int bits = 0;                   // prefix length
    static bool parse(const std::string &text, AddressRange *range);
    bool contains(const sockaddr *address, socklen_t length) const;
};

enum class PasswordVerdict { match, mismatch, unknown_user, unusable };

PasswordVerdict check_password(std::string_view password, std::string_view hash);

class PasswordFile {
public:
    explicit PasswordFile(const std::string &path);
    ~PasswordFile();
    PasswordFile(PasswordFile &&) noexcept;
    PasswordFile &operator=(PasswordFile &&) noexcept;

    PasswordVerdict check(std::string_view user, std::string_view password);
    int refresh();
    size_t users() const;
    const std::string &path() const { return path_; }
    const std::string &error() const { return error_; }

private:
    struct Internals;  // the entries, the file's version, the verified passwords
    std::string path_;
    std::string error_;
    std::unique_ptr<Internals> in_;
};

class HttpService {
public:
    explicit HttpService(const HttpOptions &options = HttpOptions());
    ~HttpService();
    HttpService(const HttpService &) = delete;
    HttpService &operator=(const HttpService &) = delete;

    int route(const std::string &method, const std::string &path_regex, HttpHandler handler);
    int serve_directory(const std::string &docroot);
    int serve_directory(const std::string &prefix, const std::string &docroot);
    int serve_status(const std::string &path, const std::vector<AddressRange> &allow = {});
    int serve_cgi(const std::string &prefix, const std::string &directory);
    int allow_from(const std::string &prefix, const AddressRange &range);
    int deny_from(const std::string &prefix, const AddressRange &range);
    void on_error(std::function<void(const HttpContext *c, int status, HttpResponse &r)> render);
    int require_auth(const std::string &prefix, const std::string &password_file, const std::string &realm);
    void serve(Worker &worker, int fd);
    void refuse(Worker &worker, int fd);
    const std::string &error() const { return error_; }
    const HttpOptions &options() const { return options_; }
    void set_options(const HttpOptions &options) { options_ = options; }

private:
    struct Internals;  // routes and reused buffers, defined in prefork.cc
    HttpOptions options_;
    std::string error_;
    std::unique_ptr<Internals> in_;
};

}  // namespace prefork

#endif
