/* httpd.cc - the server program on top of prefork.

   The pool and the HTTP/1.1 responder come from the library; this file is
   options, logging and wiring: it serves the files under DOCROOT. A bad
   option gets one clear line and exit 2; a listener that cannot be had,
   exit 1. */
#include "prefork.h"

#include <cerrno>
#include <cmath>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>


static const char version[] = "httpd (prefork) 0.1.0";

static void usage(FILE *out) {
    fprintf(out,
            "usage: httpd [options] [DOCROOT]   (serves DOCROOT, default: the current directory)\n"
            "  --listen ADDR                 PORT, HOST:PORT, [V6]:PORT or unix:PATH (repeatable;\n"
            "                                default 8080)\n"
            "  --start-servers N             workers forked at start (5)\n"
            "  --min-spare-servers N         idle workers kept ready (5)\n"
            "  --max-spare-servers N         idle workers above this are retired (10)\n"
            "  --max-clients N               most workers at once (256)\n"
            "  --max-clients-per-ip N        most workers one client address may hold; more\n"
            "                                get 503 at once (0 = no limit, the default)\n"
            "  --max-requests-per-child N    connections before a worker is replaced (0 = no limit)\n"
            "  --timeout SEC                 kill a worker silent for this long (0 = off)\n"
            "  --graceful-timeout SEC        bound on a graceful stop or restart (30)\n"
            "  --upgrade-timeout SEC         time a new binary has to get ready on SIGUSR2 (60)\n"
            "  --request-timeout SEC         time a request head may take to arrive (10)\n"
            "  --keepalive-timeout SEC       time an idle keep-alive connection is kept (5)\n"
            "  --min-rate BYTES              bytes/s a body or a response must average once\n"
            "                                its first timeout is spent (500)\n"
            "  --pressure-timeout SEC        the timeouts while no worker is idle and the pool\n"
            "                                is at --max-clients: slow clients give way (0.5)\n"
            "  --status-path PATH            the status page (/server-status; off to disable)\n"
            "  --status-allow CIDR           who may see it (repeatable; default loopback only;\n"
            "                                UNIX-socket clients always may)\n"
            "  --access-log PATH|-           Combined Log Format access log (none by default)\n"
            "  --error-log PATH|-            where log lines go (- is stderr, the default)\n"
            "  --pid-file PATH               write the parent's pid there while it runs\n"
            "  --user NAME                   run as this user once the listeners are bound\n"
            "  --single-process              serve in one process, no fork (debugging)\n"
            "  --debug-scoreboard            log the scoreboard every second\n"
            "  --help, --version\n");
}

// Writes "PID\n" (this process's pid unless told) to path through a
// temporary file and rename(2), so no reader ever sees a half-written file.
// 0 / -1 with errno.
static int write_pid_file(const std::string &path, pid_t pid = getpid()) {
    std::string temporary = path + ".tmp." + std::to_string(getpid());
    FILE *f = fopen(temporary.c_str(), "w");
    if (!f) return -1;
    bool written = fprintf(f, "%d\n", int(pid)) > 0;
    if (fclose(f) != 0 || !written || rename(temporary.c_str(), path.c_str()) != 0) {
        int saved = errno;
        unlink(temporary.c_str());
        errno = saved;
        return -1;
    }
    return 0;
}

// Removes the pid file if it still names this process: after a binary
// upgrade it names the new parent, which removes it in its turn. The new
// parent of an upgrade that failed after it wrote the file gives it back
// to the old parent, which serves on.
static void remove_pid_file(const std::string &path, bool give_back) {
    FILE *f = fopen(path.c_str(), "r");
    if (!f) return;
    int pid = 0;
    bool ours = fscanf(f, "%d", &pid) == 1 && pid == int(getpid());
    fclose(f);
    if (ours && !(give_back && write_pid_file(path, getppid()) == 0)) unlink(path.c_str());
}

// Opens path for appending onto descriptor fd (the log rotated away keeps
// its name no more). On failure the old file stays, and the error is logged.
static void reopen_onto(prefork::Server &server, const std::string &path, int fd, bool cloexec) {
    int fresh = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fresh < 0 || dup2(fresh, fd) < 0) {
        server.log(prefork::LogLevel::error, "cannot reopen %s: %s", path.c_str(), strerror(errno));
    } else if (cloexec) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    if (fresh >= 0 && fresh != fd) close(fresh);
}

// Parses a whole decimal number. false if malformed.
static bool parse_long(const char *text, long *out) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end) return false;
    *out = value;
    return true;
}

// Parses a finite decimal number (seconds, bytes a second). false if
// malformed, infinite or not a number.
static bool parse_number(const char *text, double *out) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end || !std::isfinite(value)) return false;
    *out = value;
    return true;
}

int main(int argc, char **argv) {
    prefork::Options options;
    prefork::HttpOptions http_options;
    std::vector<std::string> listens;
    std::string docroot;
    std::string status_path = "/server-status";
    std::vector<prefork::AddressRange> status_allow;
    std::string access_log, error_log, pid_file, user;
    struct IntOption { const char *name; int *target; };
    const IntOption ints[] = {
        {"--start-servers", &options.start_servers},
        {"--min-spare-servers", &options.min_spare_servers},
        {"--max-spare-servers", &options.max_spare_servers},
        {"--max-clients", &options.max_clients},
        {"--max-clients-per-ip", &options.max_clients_per_ip},
    };
    for (int i = 1; i < argc; i++) {
        std::string arg = argv[i];
        if (arg == "--help") {
            usage(stdout);
            return 0;
        }
        if (arg == "--version") {
            puts(version);
            return 0;
        }
        if (arg == "--single-process") {
            options.single_process = true;
            continue;
        }
        if (arg == "--debug-scoreboard") {
            options.debug_scoreboard = true;
            continue;
        }
        if (arg.compare(0, 2, "--") != 0) {
            if (!docroot.empty()) {
                fprintf(stderr, "httpd: unexpected argument '%s' (one DOCROOT only; see --help)\n", argv[i]);
                return 2;
            }
            docroot = arg;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "httpd: option %s needs a value\n", argv[i]);
            return 2;
        }
        const char *value = argv[++i];
        long number;
        bool known = false, ok = true;
        for (const IntOption &o : ints)
            if (arg == o.name) {
                known = true;
                ok = parse_long(value, &number) && number >= 0 && number <= 1000000;
                if (ok) *o.target = int(number);
            }
        if (arg == "--listen") {
            known = true;
            listens.push_back(value);
        } else if (arg == "--max-requests-per-child") {
            known = true;
            ok = parse_long(value, &number) && number >= 0;
            if (ok) options.max_requests_per_child = number;
        } else if (arg == "--timeout") {
            known = true;
            ok = parse_number(value, &options.timeout);
        } else if (arg == "--graceful-timeout") {
            known = true;
            ok = parse_number(value, &options.graceful_timeout);
        } else if (arg == "--upgrade-timeout") {
            known = true;
            ok = parse_number(value, &options.upgrade_timeout);
        } else if (arg == "--status-path") {
            known = true;
            status_path = value;
            ok = status_path == "off" || (status_path[0] == '/' && status_path.find_first_of(" ?#") == std::string::npos);
        } else if (arg == "--status-allow") {
            known = true;
            prefork::AddressRange range;
            ok = prefork::AddressRange::parse(value, &range);
            if (ok) status_allow.push_back(range);
        } else if (arg == "--access-log" || arg == "--error-log" || arg == "--pid-file" || arg == "--user") {
            known = true;
            ok = *value != '\0';
            (arg == "--access-log" ? access_log : arg == "--error-log" ? error_log : arg == "--pid-file" ? pid_file : user) = value;
        } else if (arg == "--request-timeout") {
            known = true;
            ok = parse_number(value, &http_options.request_timeout) && http_options.request_timeout > 0;
        } else if (arg == "--keepalive-timeout") {
            known = true;
            ok = parse_number(value, &http_options.keepalive_timeout) && http_options.keepalive_timeout >= 0;
        } else if (arg == "--min-rate") {
            known = true;
            ok = parse_number(value, &http_options.min_rate) && http_options.min_rate >= 0;
        } else if (arg == "--pressure-timeout") {
            known = true;
            ok = parse_number(value, &http_options.pressure_timeout) && http_options.pressure_timeout > 0;
        }
        if (!known) {
            fprintf(stderr, "httpd: unknown option %s (see --help)\n", arg.c_str());
            return 2;
        }
        if (!ok) {
            fprintf(stderr, "httpd: bad value '%s' for %s\n", value, arg.c_str());
            return 2;
        }
    }
    prefork::Options checked = options;  // run() logs the normalisations itself
    std::string bad = prefork::check_options(checked, nullptr);
    if (!bad.empty()) {
        fprintf(stderr, "httpd: %s\n", bad.c_str());
        return 2;
    }
    // A connection reaches a worker once its request has begun to arrive:
    // no worker waits on a client that connects and says nothing.
    options.defer_accept = http_options.request_timeout;
    options.notify_systemd = true;  // only when NOTIFY_SOCKET is set
    prefork::Server server(options);
    bool verbose = options.debug_scoreboard;
    server.on_log([verbose](prefork::LogLevel level, const char *message) {
        if (verbose || level != prefork::LogLevel::debug) prefork::log_to_stderr(level, message);
    });
    // Sockets passed by systemd, or by the old parent of a binary upgrade.
    int passed = server.listen_inherited();
    if (passed < 0) {
        fprintf(stderr, "httpd: %s\n", server.error().c_str());
        return 2;
    }
    if (listens.empty() && passed == 0) listens.push_back("8080");
    struct passwd *account = nullptr;
    if (!user.empty() && !(account = getpwnam(user.c_str()))) {
        fprintf(stderr, "httpd: unknown user '%s' for --user\n", user.c_str());
        return 2;
    }
    if (geteuid() == 0 && user.empty()) {
        fprintf(stderr, "httpd: refusing to run the workers as root: give --user NAME "
                        "(or --user root to insist)\n");
        return 2;
    }

    // Logs open before privileges go, so they may live where root writes.
    if (!error_log.empty() && error_log != "-") {
        int fd = open(error_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0) {
            fprintf(stderr, "httpd: cannot open the error log %s: %s\n", error_log.c_str(), strerror(errno));
            return 1;
        }
        close(fd);
    }
    if (!access_log.empty()) {
        http_options.access_log_fd =
            access_log == "-" ? 1 : open(access_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (http_options.access_log_fd < 0) {
            fprintf(stderr, "httpd: cannot open the access log %s: %s\n", access_log.c_str(), strerror(errno));
            return 1;
        }
    }

    for (const std::string &spec : listens)
        if (server.listen(spec) != 0) {
            fprintf(stderr, "httpd: %s\n", server.error().c_str());
            return 1;
        }
    http_options.server_name = "prefork-httpd/0.1";
    prefork::HttpService http(http_options);
    if ((status_path != "off" && http.serve_status(status_path, status_allow) != 0) ||
        http.serve_directory(docroot.empty() ? "." : docroot) != 0) {
        fprintf(stderr, "httpd: %s\n", http.error().c_str());
        return 2;
    }
    server.on_connection([&http](prefork::Worker &worker, int fd) { http.serve(worker, fd); });
    server.on_refusal([&http](prefork::Worker &worker, int fd) { http.refuse(worker, fd); });
    // SIGUSR1 (logrotate): the files are opened again by name, as the user
    // httpd runs as, so the log directory must let that user create them.
    server.on_reopen([&] {
        if (!error_log.empty() && error_log != "-") reopen_onto(server, error_log, 2, false);
        if (!access_log.empty() && access_log != "-") reopen_onto(server, access_log, http_options.access_log_fd, true);
    });
    // SIGUSR2 runs this command again: the binary on disk then.
    if (server.enable_upgrade(argc, argv) != 0) {
        fprintf(stderr, "httpd: %s\n", server.error().c_str());
        return 1;
    }
    // The pid file first, while we may still write where root keeps them
    // (/run); removing it at exit is then best effort. The new parent of an
    // upgrade writes it only once its pool is ready: until then the old
    // parent is the one to signal.
    if (!pid_file.empty() && !server.upgrading() && write_pid_file(pid_file) != 0) {
        fprintf(stderr, "httpd: cannot write the pid file %s: %s\n", pid_file.c_str(), strerror(errno));
        return 1;
    }
    if (!pid_file.empty() && server.upgrading())
        server.on_ready([&server, &pid_file] {
            if (write_pid_file(pid_file) == 0) return true;
            server.log(prefork::LogLevel::error, "cannot write the pid file %s: %s", pid_file.c_str(),
                       strerror(errno));
            return false;
        });
    // The whole process becomes the user, parent included: once the
    // listeners, the logs and the pid file are open, the parent only forks,
    // signals its own workers and reads the scoreboard (made by run(), so
    // owned by the user too). Nothing to do when we are that user already.
    if (account && account->pw_uid != geteuid() &&
        (initgroups(account->pw_name, account->pw_gid) != 0 || setgid(account->pw_gid) != 0 ||
         setuid(account->pw_uid) != 0)) {
        fprintf(stderr, "httpd: cannot become user %s: %s\n", user.c_str(), strerror(errno));
        if (!pid_file.empty()) remove_pid_file(pid_file, false);
        return 1;
    }
    for (size_t i = 0; i < server.listener_count(); i++)
        server.log(prefork::LogLevel::notice, "listening on %s", server.address(i).c_str());
    int rc = server.run();
    if (!pid_file.empty()) remove_pid_file(pid_file, server.upgrading());
    if (rc != 0) {
        fprintf(stderr, "httpd: %s\n", server.error().c_str());
        return 1;
    }
    return 0;
}
