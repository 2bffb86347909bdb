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
            "  --cgi PREFIX=DIR              run the executable files in DIR as CGI scripts for\n"
            "                                PREFIX + name (repeatable; e.g. /cgi-bin/=/srv/cgi)\n"
            "  --cgi-timeout SEC             kill a CGI script running longer (60)\n"
            "  --allow PREFIX=CIDR           only these clients may reach PREFIX (repeatable)\n"
            "  --deny PREFIX=CIDR            these clients may not (repeatable; the longest\n"
            "                                prefix with rules decides, its first match wins)\n"
            "  --error-page CODE=PATH        send DOCROOT/PATH for the server's own CODE answers\n"
            "                                (400-599, repeatable; .html as HTML, else text)\n"
            "  --auth PREFIX=FILE            paths under PREFIX need a user and password of the\n"
            "                                htpasswd FILE (re-read when it changes; repeatable)\n"
            "  --auth-realm TEXT             the realm browsers show for --auth (httpd)\n"
            "  --no-precompressed            never send NAME.br or NAME.gz for NAME (by default\n"
            "                                they go to the clients whose Accept-Encoding takes them)\n"
            "  --autoindex                   list a directory that has no index.html (else 403)\n"
            "  --file-cache BYTES            small files each worker keeps in memory, re-read\n"
            "                                once a second (65536; 0: none)\n"
            "  --access-log PATH|-           Combined Log Format access log (none by default)\n"
            "  --error-log PATH|-            where log lines go (- is stderr, the default)\n"
            "  --pid-file PATH               write the parent's pid there while it runs\n"
            "  --user NAME                   run as this user once the listeners are bound\n"
            "  --no-batch-scheduling         workers keep the normal scheduling policy (by\n"
            "                                default they are batch processes, Linux SCHED_BATCH:\n"
            "                                one woken under load does not preempt another)\n"
            "  --single-process              serve in one process, no fork (debugging)\n"
            "  --debug-scoreboard            log the scoreboard every second\n"
            "  --config FILE                 options from FILE, a \"name value\" per line (the\n"
            "                                command line wins; SIGHUP reads it again)\n"
            "  --help, --version\n");
}

// Writes "PID\n" (this process's pid unless told) to path through a
// temporary file and rename(2), so no reader ever sees a half-written file.
// 0 / -1 with errno.
STARTUP static int write_pid_file(const std::string &path, pid_t pid = getpid()) {
    std::string temporary = path + ".tmp." + std::to_string(long(getpid()));
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

// An --error-page, read at start: sent for its status in the library's
// place, the status kept.
struct ErrorPage {
    int status;
    std::string type, body;
};

// The library's defaults, but workers run as batch processes: they serve
// short requests, and one woken under load should not preempt another.
STARTUP static prefork::Options pool_defaults() {
    prefork::Options options;
    options.batch_scheduling = true;
    return options;
}

// Everything the command line says, and what main() derives from it. It
// lives in main() as long as the server does: the hooks read it.
struct Config {
    prefork::Options options = pool_defaults();
    prefork::HttpOptions http_options;
    std::vector<std::string> listens;
    std::string docroot;
    std::string status_path = "/server-status";
    std::vector<prefork::AddressRange> status_allow;
    std::vector<std::string> cgi;  // "PREFIX=DIR"
    std::vector<std::string> access;  // "--allow PREFIX=CIDR" or "--deny PREFIX=CIDR", in order
    std::vector<std::string> error_page_options;  // "CODE=PATH"
    std::vector<ErrorPage> error_pages;           // what they name, read
    std::string access_log, error_log, pid_file, user, config_file;
    std::vector<std::string> auth;  // --auth PREFIX=FILE, checked
    std::string auth_realm = "httpd";
    bool default_user = false;  // root without --user: user was chosen here
    bool docroot_from_file = false;  // the command line's DOCROOT replaces it
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
    if (name == "--cgi-timeout") return taken_if(parse_number(value, &http.cgi_timeout) && http.cgi_timeout > 0);
    if (name == "--file-cache") {
        long bytes;
        bool ok = parse_long(value, &bytes) && bytes >= 0 && bytes <= 1L << 30;
        if (ok) http.file_cache = size_t(bytes);
        return taken_if(ok);
    }
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
    if (name == "--allow" || name == "--deny") {
        const char *equals = strchr(value, '=');
        prefork::AddressRange range;
        config.access.push_back(name + " " + value);
        return taken_if(equals && equals != value && prefork::AddressRange::parse(equals + 1, &range));
    }
    if (name == "--error-page") {
        long code = 0;
        std::string text = value;
        size_t equals = text.find('=');
        config.error_page_options.push_back(text);
        return taken_if(equals != std::string::npos && parse_long(text.substr(0, equals).c_str(), &code) &&
                        code >= 400 && code <= 599 && text.compare(equals + 1, 1, "/") == 0 &&
                        text.find("/..", equals) == std::string::npos);
    }
    if (name == "--cgi") {
        const char *equals = strchr(value, '=');
        config.cgi.push_back(value);
        return taken_if(equals && equals != value && equals[1]);
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
                          : name == "--config"    ? &config.config_file
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

// Sets a flag, an option without a value. false if name is none.
STARTUP static bool set_flag(Config &config, const std::string &name) {
    struct Flag { const char *name; bool *target; bool value; };
    const Flag flags[] = {
        {"--single-process", &config.options.single_process, true},
        {"--debug-scoreboard", &config.options.debug_scoreboard, true},
        {"--no-precompressed", &config.http_options.precompressed, false},
        {"--autoindex", &config.http_options.autoindex, true},
        {"--no-batch-scheduling", &config.options.batch_scheduling, false},
    };
    for (const Flag &flag : flags)
        if (name == flag.name) {
            *flag.target = flag.value;
            return true;
        }
    return false;
}

// An argument, from the command line or a line of the config file.
struct Argument {
    std::string text;
    std::string where;  // "" on the command line, else "FILE:LINE: "
};

// Reads the arguments in order into config: an argument before --help is
// read, and may fail, first; an option's value comes from the same place
// (a line of the file takes its value from that line). A DOCROOT on the
// command line replaces the file's. go_on, or the exit status: 0 after
// --help or --version, 2 with one sentence in *error for a bad argument.
STARTUP static int read_arguments(const std::vector<Argument> &args, Config &config, std::string *error) {
    for (size_t i = 0; i < args.size(); i++) {
        const std::string &arg = args[i].text, &where = args[i].where;
        if ((arg == "--help" || arg == "--version") && where.empty()) {
            if (arg == "--help") usage(stdout);
            else puts(version);
            return 0;
        }
        if (set_flag(config, arg)) continue;
        if (arg.compare(0, 2, "--") != 0) {
            if (!config.docroot.empty() && !(config.docroot_from_file && where.empty())) {
                *error = where + "unexpected argument '" + arg + "' (one DOCROOT only; see --help)";
                return 2;
            }
            config.docroot = arg;
            config.docroot_from_file = !where.empty();
            continue;
        }
        if (i + 1 >= args.size() || args[i + 1].where != where) {
            *error = where + "option " + arg + " needs a value";
            return 2;
        }
        const std::string &value = args[++i].text;
        Setting setting = set_option(config, arg, value.c_str());
        if (setting == Setting::unknown_option) *error = where + "unknown option " + arg + " (see --help)";
        if (setting == Setting::bad_value) *error = where + "bad value '" + value + "' for " + arg;
        if (setting != Setting::taken) return 2;
    }
    return go_on;
}

// Appends the config file's lines to args: "name value" is --name value,
// "docroot PATH" the DOCROOT, a name alone a flag (single-process); "#"
// at a line's start or after a blank begins a comment. false with one
// sentence in *error.
STARTUP static bool read_config_file(const std::string &path, std::vector<Argument> &args, std::string *error) {
    FILE *f = fopen(path.c_str(), "re");
    if (!f) {
        *error = "cannot read the config file " + path + ": " + strerror(errno);
        return false;
    }
    char *line = nullptr;
    size_t capacity = 0;
    for (int number = 1; getline(&line, &capacity, f) >= 0; number++) {
        std::string text = line, where = path + ":" + std::to_string(long(number)) + ": ";
        size_t hash = text.find('#');
        while (hash != std::string::npos && hash > 0 && text[hash - 1] != ' ' && text[hash - 1] != '\t')
            hash = text.find('#', hash + 1);
        text = text.substr(0, hash);
        size_t start = text.find_first_not_of(" \t\r\n"), end = text.find_last_not_of(" \t\r\n");
        if (start == std::string::npos) continue;
        text = text.substr(start, end + 1 - start);
        size_t blank = text.find_first_of(" \t");
        std::string name = text.substr(0, blank), value;
        if (blank != std::string::npos) value = text.substr(text.find_first_not_of(" \t", blank));
        if (name.compare(0, 2, "--") == 0) name.erase(0, 2);
        if (name == "config" || name == "help" || name == "version") {
            *error = where + name + " cannot be set in a config file";
            break;
        }
        args.push_back({name == "docroot" ? value : "--" + name, where});
        if (name != "docroot" && !value.empty()) args.push_back({value, where});
    }
    free(line);
    fclose(f);
    return error->empty();
}

// The config file (--config FILE) and then the command line, which wins:
// its repeatable options replace the file's lists, its DOCROOT the file's.
// go_on, or the exit status with one sentence in *error (0 after --help).
STARTUP static int read_command_line(int argc, char **argv, Config &config, std::string *error) {
    std::vector<Argument> args, command_line;
    for (int i = 1; i < argc; i++) command_line.push_back({argv[i], ""});
    for (int i = 1; i + 1 < argc; i++)
        if (std::string(argv[i]) == "--config") config.config_file = argv[i + 1];
    if (!config.config_file.empty() && !read_config_file(config.config_file, args, error)) return 2;
    int status = read_arguments(args, config, error);
    if (status != go_on) return status;
    auto given = [&](const char *name) {
        return std::any_of(command_line.begin(), command_line.end(), [&](const Argument &a) { return a.text == name; });
    };
    if (given("--listen")) config.listens.clear();
    if (given("--cgi")) config.cgi.clear();
    if (given("--error-page")) config.error_page_options.clear();
    if (given("--auth")) config.auth.clear();
    if (given("--allow") || given("--deny")) config.access.clear();
    if (given("--status-allow")) config.status_allow.clear();
    return read_arguments(command_line, config, error);
}

// The options step: the command line, then the library's own checks of the
// pool options, then what httpd always asks of the pool. go_on, or the
// exit status (0 after --help or --version, 2 after one line on stderr).
STARTUP static int read_options(int argc, char **argv, Config &config) {
    std::string error;
    int status = read_command_line(argc, argv, config, &error);
    if (!error.empty()) fprintf(stderr, "httpd: %s\n", error.c_str());
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
// bound. Root without --user becomes www-data where it exists, else
// nobody, as nginx and Apache do (only --user root keeps root). false
// after one line on stderr for an unknown user.
STARTUP static bool find_account(Config &config) {
    if (geteuid() == 0 && config.user.empty()) {
        config.user = getpwnam("www-data") ? "www-data" : "nobody";
        config.default_user = true;
    }
    if (!config.user.empty() && !getpwnam(config.user.c_str())) {
        fprintf(stderr, config.default_user ? "httpd: started as root without --user, and there is no %s "
                                              "account: give --user NAME\n"
                                            : "httpd: unknown user '%s' for --user\n",
                config.user.c_str());
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

// Reads the --error-page files beneath the docroot and has the responder
// send them for their statuses. false after one line on stderr.
STARTUP static bool use_error_pages(prefork::HttpService &http, Config &config) {
    for (const std::string &option : config.error_page_options) {
        size_t equals = option.find('=');
        std::string path = (config.docroot.empty() ? "." : config.docroot) + option.substr(equals);
        path.erase(path.find('='), 1);
        FILE *f = fopen(path.c_str(), "re");
        ErrorPage page = {atoi(option.c_str()), "text/html; charset=utf-8", ""};
        char chunk[4096];
        for (size_t n; f && (n = fread(chunk, 1, sizeof chunk, f)) > 0;) page.body.append(chunk, n);
        if (!f || ferror(f)) {
            fprintf(stderr, "httpd: cannot read the error page %s: %s\n", path.c_str(), strerror(errno));
            if (f) fclose(f);
            return false;
        }
        fclose(f);
        if (path.size() < 5 || path.compare(path.size() - 5, 5, ".html") != 0) page.type = "text/plain; charset=utf-8";
        config.error_pages.push_back(page);
    }
    if (config.error_pages.empty()) return true;
    http.on_error([&config](const prefork::HttpContext *, int status, prefork::HttpResponse &r) {
        for (const ErrorPage &page : config.error_pages)
            if (page.status == status) {
                r.header("Content-Type", page.type);
                r.body(page.body);
                return;
            }
    });
    return true;
}

// What the responder serves: the status page (unless off), the CGI
// directories, the access rules, --auth's prefixes behind passwords (their
// files are read now, as root when started so; the workers re-read them as
// --user) and DOCROOT. false after one line on stderr.
STARTUP static bool serve_status_and_docroot(prefork::HttpService &http, const Config &config) {
    bool ok = config.status_path == "off" || http.serve_status(config.status_path, config.status_allow) == 0;
    for (const std::string &auth : config.auth) {
        size_t equals = auth.find('=');
        ok = ok && http.require_auth(auth.substr(0, equals), auth.substr(equals + 1), config.auth_realm) == 0;
    }
    for (const std::string &cgi : config.cgi) {
        size_t equals = cgi.find('=');
        ok = ok && http.serve_cgi(cgi.substr(0, equals), cgi.substr(equals + 1)) == 0;
    }
    for (const std::string &rule : config.access) {  // "--allow PREFIX=CIDR"
        size_t blank = rule.find(' '), equals = rule.find('=');
        std::string prefix = rule.substr(blank + 1, equals - blank - 1);
        prefork::AddressRange range;
        prefork::AddressRange::parse(rule.substr(equals + 1), &range);
        ok = ok && (rule[2] == 'a' ? http.allow_from(prefix, range) : http.deny_from(prefix, range)) == 0;
    }
    if (!ok || http.serve_directory(config.docroot.empty() ? "." : config.docroot) != 0) {
        fprintf(stderr, "httpd: %s\n", http.error().c_str());
        return false;
    }
    return true;
}

// SIGHUP with a config file: reads it and the command line again, and
// gives the next generation what can change without binding again: the
// HTTP timeouts, min-rate and cgi-timeout. The rest (listeners, pool
// sizes, mounts, the user) waits for a binary upgrade (SIGUSR2), which
// runs httpd anew. A file that no longer reads keeps the settings in use.
STARTUP static void read_settings_again(prefork::Server &server, prefork::HttpService &http, int argc, char **argv) {
    Config fresh;
    std::string error;
    if (read_command_line(argc, argv, fresh, &error) != go_on) {
        server.log(prefork::LogLevel::error, "SIGHUP: %s; keeping the settings in use", error.c_str());
        return;
    }
    prefork::HttpOptions o = http.options();
    const prefork::HttpOptions &n = fresh.http_options;
    o.request_timeout = n.request_timeout;
    o.keepalive_timeout = n.keepalive_timeout;
    o.min_rate = n.min_rate;
    o.pressure_timeout = n.pressure_timeout;
    o.cgi_timeout = n.cgi_timeout;
    http.set_options(o);
    server.log(prefork::LogLevel::notice,
               "SIGHUP: %s read again: request-timeout %g, keepalive-timeout %g, min-rate %g, "
               "pressure-timeout %g, cgi-timeout %g",
               fresh.config_file.c_str(), o.request_timeout, o.keepalive_timeout, o.min_rate, o.pressure_timeout,
               o.cgi_timeout);
}

// The wiring step: connections to the responder, SIGUSR1 to the logs,
// SIGHUP to the config file, SIGUSR2 to this command. false after one
// line on stderr.
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
    if (!config.config_file.empty())
        server.on_restart([&server, &http, argc, argv] { read_settings_again(server, http, argc, argv); });
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
// by run(), so owned by the user too). Nothing to do without a user, or
// when we are that user already. Logs a user chosen by default, and warns
// when the user cannot read the docroot. false after one line on stderr,
// the pid file removed.
STARTUP static bool become_user(prefork::Server &server, const Config &config) {
    std::string error;
    if (config.user.empty() || prefork::drop_privileges(config.user, &error) == 0) {
        const char *docroot = config.docroot.empty() ? "." : config.docroot.c_str();
        if (config.default_user)
            server.log(prefork::LogLevel::notice, "started as root without --user: running as %s",
                       config.user.c_str());
        if (access(docroot, R_OK | X_OK) != 0)
            server.log(prefork::LogLevel::warning, "%s cannot read the docroot %s: %s", config.user.c_str(), docroot,
                       strerror(errno));
        return true;
    }
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
    if (!take_passed_listeners(server, config.listens) || !find_account(config)) return 2;
    if (!open_logs(config) || !listen_all(server, config.listens)) return 1;
    config.http_options.server_name = "prefork-httpd/0.1.0";
    prefork::HttpService http(config.http_options);
    if (!serve_status_and_docroot(http, config) || !use_error_pages(http, config)) return 2;
    if (!wire(server, http, config, argc, argv)) return 1;
    if (!publish_pid_file(server, config.pid_file)) return 1;
    if (!become_user(server, config)) return 1;
    return serve(server, config.pid_file);
}
