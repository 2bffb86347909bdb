/* httpd.cc - the server program on top of prefork.

   The pool and the HTTP/1.1 responder come from the library; this file is
   options, logs, privileges and wiring (main() reads as the outline): it
   serves the files under DOCROOT. A bad option gets one clear line and
   exit 2; a listener that cannot be had, exit 1. */
#include "prefork.h"

#include <cerrno>
#include <cmath>
#include <fcntl.h>
#include <pwd.h>
#include <unistd.h>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>


// httpd's own code runs at start-up and at signals, never per request (the
// library serves those): compiled for size.
#define STARTUP __attribute__((cold))

static const char version[] = "httpd (prefork) 0.1.0";

STARTUP static void usage(FILE *out) {
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
            "  --auth PREFIX=FILE            paths under PREFIX need a user and password of the\n"
            "                                htpasswd FILE (re-read when it changes; repeatable)\n"
            "  --auth-realm TEXT             the realm browsers show for --auth (httpd)\n"
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
STARTUP static int write_pid_file(const std::string &path, pid_t pid = getpid()) {
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
STARTUP static void remove_pid_file(const std::string &path, bool give_back) {
    FILE *f = fopen(path.c_str(), "r");
    if (!f) return;
    int pid = 0;
    bool ours = fscanf(f, "%d", &pid) == 1 && pid == int(getpid());
    fclose(f);
    if (ours && !(give_back && write_pid_file(path, getppid()) == 0)) unlink(path.c_str());
}

// Opens path for appending onto descriptor fd (the log rotated away keeps
// its name no more). On failure the old file stays, and the error is logged.
STARTUP static void reopen_onto(prefork::Server &server, const std::string &path, int fd, bool cloexec) {
    int fresh = open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fresh < 0 || dup2(fresh, fd) < 0) {
        server.log(prefork::LogLevel::error, "cannot reopen %s: %s", path.c_str(), strerror(errno));
    } else if (cloexec) {
        fcntl(fd, F_SETFD, FD_CLOEXEC);
    }
    if (fresh >= 0 && fresh != fd) close(fresh);
}

// Parses a whole decimal number. false if malformed.
STARTUP static bool parse_long(const char *text, long *out) {
    char *end;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno || end == text || *end) return false;
    *out = value;
    return true;
}

// Parses a finite decimal number (seconds, bytes a second). false if
// malformed, infinite or not a number.
STARTUP static bool parse_number(const char *text, double *out) {
    char *end;
    errno = 0;
    double value = strtod(text, &end);
    if (errno || end == text || *end || !std::isfinite(value)) return false;
    *out = value;
    return true;
}

// Everything the command line says, and what main() derives from it. It
// lives in main() as long as the server does: the hooks read it.
struct Config {
    prefork::Options options;
    prefork::HttpOptions http_options;
    std::vector<std::string> listens;
    std::string docroot;
    std::string status_path = "/server-status";
    std::vector<prefork::AddressRange> status_allow;
    std::string access_log, error_log, pid_file, user;
    std::vector<std::string> auth;  // --auth PREFIX=FILE, checked
    std::string auth_realm = "httpd";
};

// A step of main() that may end the program returns go_on, or the exit
// status to end with.
static const int go_on = -1;

// What an option's value came to.
enum class Setting { taken, bad_value, unknown_option };

STARTUP static Setting taken_if(bool ok) { return ok ? Setting::taken : Setting::bad_value; }

// The pool's numeric options, counts and seconds.
STARTUP static Setting set_pool_option(prefork::Options &options, const std::string &name, const char *value) {
    struct IntOption { const char *name; int *target; };
    const IntOption ints[] = {
        {"--start-servers", &options.start_servers},
        {"--min-spare-servers", &options.min_spare_servers},
        {"--max-spare-servers", &options.max_spare_servers},
        {"--max-clients", &options.max_clients},
        {"--max-clients-per-ip", &options.max_clients_per_ip},
    };
    long number;
    for (const IntOption &o : ints)
        if (name == o.name) {
            bool ok = parse_long(value, &number) && number >= 0 && number <= 1000000;
            if (ok) *o.target = int(number);
            return taken_if(ok);
        }
    if (name == "--max-requests-per-child") {
        bool ok = parse_long(value, &number) && number >= 0;
        if (ok) options.max_requests_per_child = number;
        return taken_if(ok);
    }
    if (name == "--timeout") return taken_if(parse_number(value, &options.timeout));
    if (name == "--graceful-timeout") return taken_if(parse_number(value, &options.graceful_timeout));
    if (name == "--upgrade-timeout") return taken_if(parse_number(value, &options.upgrade_timeout));
    return Setting::unknown_option;
}

// The HTTP options: the responder's timeouts and rate, the status page.
STARTUP static Setting set_http_option(Config &config, const std::string &name, const char *value) {
    prefork::HttpOptions &http = config.http_options;
    if (name == "--request-timeout")
        return taken_if(parse_number(value, &http.request_timeout) && http.request_timeout > 0);
    if (name == "--keepalive-timeout")
        return taken_if(parse_number(value, &http.keepalive_timeout) && http.keepalive_timeout >= 0);
    if (name == "--min-rate") return taken_if(parse_number(value, &http.min_rate) && http.min_rate >= 0);
    if (name == "--pressure-timeout")
        return taken_if(parse_number(value, &http.pressure_timeout) && http.pressure_timeout > 0);
    if (name == "--status-path") {
        std::string &path = config.status_path = value;
        return taken_if(path == "off" || (path[0] == '/' && path.find_first_of(" ?#") == std::string::npos));
    }
    if (name == "--status-allow") {
        prefork::AddressRange range;
        bool ok = prefork::AddressRange::parse(value, &range);
        if (ok) config.status_allow.push_back(range);
        return taken_if(ok);
    }
    return Setting::unknown_option;
}

// The options that name a place: a listener, a file, an account, a
// password file for a path prefix.
STARTUP static Setting set_place_option(Config &config, const std::string &name, const char *value) {
    if (name == "--listen") {
        config.listens.push_back(value);
        return Setting::taken;
    }
    if (name == "--auth") {
        const char *equals = strchr(value, '=');
        bool ok = value[0] == '/' && equals && equals[1];
        if (ok) config.auth.push_back(value);
        return taken_if(ok);
    }
    if (name == "--auth-realm") {
        config.auth_realm = value;
        return Setting::taken;
    }
    std::string *target = name == "--access-log" ? &config.access_log
                          : name == "--error-log" ? &config.error_log
                          : name == "--pid-file"  ? &config.pid_file
                          : name == "--user"      ? &config.user
                                                  : nullptr;
    if (!target) return Setting::unknown_option;
    *target = value;
    return taken_if(*value != '\0');
}

// Sets one "--name VALUE" option: unknown_option if no group knows name.
STARTUP static Setting set_option(Config &config, const std::string &name, const char *value) {
    Setting setting = set_pool_option(config.options, name, value);
    if (setting == Setting::unknown_option) setting = set_http_option(config, name, value);
    if (setting == Setting::unknown_option) setting = set_place_option(config, name, value);
    return setting;
}

// Reads the arguments in order into config: an argument before --help is
// read, and may fail, first. go_on, or the exit status: 0 after --help or
// --version, 2 after one line on stderr for a bad argument.
STARTUP static int read_command_line(int argc, char **argv, Config &config) {
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
            config.options.single_process = true;
            continue;
        }
        if (arg == "--debug-scoreboard") {
            config.options.debug_scoreboard = true;
            continue;
        }
        if (arg.compare(0, 2, "--") != 0) {
            if (!config.docroot.empty()) {
                fprintf(stderr, "httpd: unexpected argument '%s' (one DOCROOT only; see --help)\n", argv[i]);
                return 2;
            }
            config.docroot = arg;
            continue;
        }
        if (i + 1 >= argc) {
            fprintf(stderr, "httpd: option %s needs a value\n", argv[i]);
            return 2;
        }
        const char *value = argv[++i];
        Setting setting = set_option(config, arg, value);
        if (setting == Setting::unknown_option) {
            fprintf(stderr, "httpd: unknown option %s (see --help)\n", arg.c_str());
            return 2;
        }
        if (setting == Setting::bad_value) {
            fprintf(stderr, "httpd: bad value '%s' for %s\n", value, arg.c_str());
            return 2;
        }
    }
    return go_on;
}

// The options step: the command line, then the library's own checks of the
// pool options, then what httpd always asks of the pool. go_on, or the
// exit status (0 after --help or --version, 2 after one line on stderr).
STARTUP static int read_options(int argc, char **argv, Config &config) {
    int status = read_command_line(argc, argv, config);
    if (status != go_on) return status;
    prefork::Options checked = config.options;  // run() logs the normalisations itself
    std::string bad = prefork::check_options(checked, nullptr);
    if (!bad.empty()) {
        fprintf(stderr, "httpd: %s\n", bad.c_str());
        return 2;
    }
    // A connection reaches a worker once its request has begun to arrive:
    // no worker waits on a client that connects and says nothing.
    config.options.defer_accept = config.http_options.request_timeout;
    config.options.notify_systemd = true;  // only when NOTIFY_SOCKET is set
    return go_on;
}

// Log lines go to stderr (the error log, once it is open); debug lines only
// with --debug-scoreboard.
STARTUP static void send_logs_to_stderr(prefork::Server &server, bool verbose) {
    server.on_log(prefork::log_to_stderr_at(verbose ? prefork::LogLevel::debug : prefork::LogLevel::info));
}

// Takes the sockets passed by systemd, or by the old parent of a binary
// upgrade; with none and no --listen, httpd listens on 8080. false after
// one line on stderr.
STARTUP static bool take_passed_listeners(prefork::Server &server, std::vector<std::string> &listens) {
    int passed = server.listen_inherited();
    if (passed < 0) {
        fprintf(stderr, "httpd: %s\n", server.error().c_str());
        return false;
    }
    if (listens.empty() && passed == 0) listens.push_back("8080");
    return true;
}

// Checks the account the whole process will become, before anything is
// bound. false after one line on stderr for an unknown user, and for root
// without --user: the workers would run as root.
STARTUP static bool find_account(const std::string &user) {
    if (!user.empty() && !getpwnam(user.c_str())) {
        fprintf(stderr, "httpd: unknown user '%s' for --user\n", user.c_str());
        return false;
    }
    if (geteuid() == 0 && user.empty()) {
        fprintf(stderr, "httpd: refusing to run the workers as root: give --user NAME "
                        "(or --user root to insist)\n");
        return false;
    }
    return true;
}

// The logs step. They open before privileges go, so they may live where
// root writes; the error log becomes stderr. false after one line.
STARTUP static bool open_logs(Config &config) {
    const std::string &error_log = config.error_log, &access_log = config.access_log;
    if (!error_log.empty() && error_log != "-") {
        int fd = open(error_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0 || dup2(fd, 2) < 0) {
            fprintf(stderr, "httpd: cannot open the error log %s: %s\n", error_log.c_str(), strerror(errno));
            return false;
        }
        close(fd);
    }
    if (!access_log.empty()) {
        int &fd = config.http_options.access_log_fd;
        fd = access_log == "-" ? 1 : open(access_log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd < 0) {
            fprintf(stderr, "httpd: cannot open the access log %s: %s\n", access_log.c_str(), strerror(errno));
            return false;
        }
    }
    return true;
}

// Binds every --listen (or the default). false after one line on stderr.
STARTUP static bool listen_all(prefork::Server &server, const std::vector<std::string> &listens) {
    for (const std::string &spec : listens)
        if (server.listen(spec) != 0) {
            fprintf(stderr, "httpd: %s\n", server.error().c_str());
            return false;
        }
    return true;
}

// What the responder serves: the status page (unless off) and DOCROOT,
// with --auth's prefixes behind passwords (their files are read now, as
// root when started so; the workers re-read them as --user). false after
// one line on stderr.
STARTUP static bool serve_status_and_docroot(prefork::HttpService &http, const Config &config) {
    bool ok = true;
    for (const std::string &auth : config.auth) {
        size_t equals = auth.find('=');
        ok = ok && http.require_auth(auth.substr(0, equals), auth.substr(equals + 1), config.auth_realm) == 0;
    }
    if (!ok || (config.status_path != "off" && http.serve_status(config.status_path, config.status_allow) != 0) ||
        http.serve_directory(config.docroot.empty() ? "." : config.docroot) != 0) {
        fprintf(stderr, "httpd: %s\n", http.error().c_str());
        return false;
    }
    return true;
}

// The wiring step: connections to the responder, SIGUSR1 to the logs,
// SIGUSR2 to this command. false after one line on stderr.
STARTUP static bool wire(prefork::Server &server, prefork::HttpService &http, const Config &config, int argc, char **argv) {
    server.on_connection([&http](prefork::Worker &worker, int fd) { http.serve(worker, fd); });
    server.on_refusal([&http](prefork::Worker &worker, int fd) { http.refuse(worker, fd); });
    // SIGUSR1 (logrotate): the files are opened again by name, as the user
    // httpd runs as, so the log directory must let that user create them.
    server.on_reopen([&server, &config] {
        const std::string &error_log = config.error_log, &access_log = config.access_log;
        if (!error_log.empty() && error_log != "-") reopen_onto(server, error_log, 2, false);
        if (!access_log.empty() && access_log != "-")
            reopen_onto(server, access_log, config.http_options.access_log_fd, true);
    });
    // SIGUSR2 runs this command again: the binary on disk then.
    if (server.enable_upgrade(argc, argv) != 0) {
        fprintf(stderr, "httpd: %s\n", server.error().c_str());
        return false;
    }
    return true;
}

// The pid file first, while we may still write where root keeps them
// (/run); removing it at exit is then best effort. The new parent of an
// upgrade writes it only once its pool is ready: until then the old parent
// is the one to signal. false after one line on stderr.
STARTUP static bool publish_pid_file(prefork::Server &server, const std::string &pid_file) {
    if (pid_file.empty()) return true;
    if (!server.upgrading()) {
        if (write_pid_file(pid_file) == 0) return true;
        fprintf(stderr, "httpd: cannot write the pid file %s: %s\n", pid_file.c_str(), strerror(errno));
        return false;
    }
    server.on_ready([&server, &pid_file] {
        if (write_pid_file(pid_file) == 0) return true;
        server.log(prefork::LogLevel::error, "cannot write the pid file %s: %s", pid_file.c_str(), strerror(errno));
        return false;
    });
    return true;
}

// The privileges step. The whole process becomes the user, parent
// included: once the listeners, the logs and the pid file are open, the
// parent only forks, signals its own workers and reads the scoreboard (made
// by run(), so owned by the user too). Nothing to do without --user, or
// when we are that user already. false after one line on stderr, the pid
// file removed.
STARTUP static bool become_user(const Config &config) {
    std::string error;
    if (config.user.empty() || prefork::drop_privileges(config.user, &error) == 0) return true;
    fprintf(stderr, "httpd: %s\n", error.c_str());
    if (!config.pid_file.empty()) remove_pid_file(config.pid_file, false);
    return false;
}

// Runs the pool until it stops; the exit status (1 after one line on
// stderr if run() failed).
STARTUP static int serve(prefork::Server &server, const std::string &pid_file) {
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

// The outline: options, the listeners and the account, logs, the service,
// wiring, the pid file, privileges, then serve. A bad option or setting
// exits 2; a resource that cannot be had (a log, a listener, the pid file,
// the user's identity) exits 1.
STARTUP int main(int argc, char **argv) {
    Config config;
    int status = read_options(argc, argv, config);
    if (status != go_on) return status;
    prefork::Server server(config.options);
    send_logs_to_stderr(server, config.options.debug_scoreboard);
    if (!take_passed_listeners(server, config.listens) || !find_account(config.user)) return 2;
    if (!open_logs(config) || !listen_all(server, config.listens)) return 1;
    config.http_options.server_name = "prefork-httpd/0.1.0";
    prefork::HttpService http(config.http_options);
    if (!serve_status_and_docroot(http, config)) return 2;
    if (!wire(server, http, config, argc, argv)) return 1;
    if (!publish_pid_file(server, config.pid_file)) return 1;
    if (!become_user(config)) return 1;
    return serve(server, config.pid_file);
}
