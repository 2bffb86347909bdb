#!/usr/bin/env python3
"""bench_pool.py - how fast a worker pool reacts, for httpd and two peers.

Run through test/bench_pool.sh, which makes the scratch directory and picks
the binaries. Two figures per server, all servers in the same run:

  burst        From a pool warmed up from start_servers=2 (min spare 5, max
               spare 10, max clients 256) until its worker count stops
               growing, open 64 connections that each send a partial request
               head (no blank line), so each one holds a worker. Time from the
               first connect() until the listening socket's accept queue is
               empty, read from the rx_queue field of its LISTEN row in
               /proc/net/tcp, polled every millisecond. A fresh server per run.

  replacement  With a steady pool (start 5, min spare 5, max spare 10; nginx:
               one worker), SIGKILL the oldest worker (one alive for at least
               a second, so the kill is not a crash at start-up) and time
               until a new child pid of the master shows up in
               /proc/MASTER/task/MASTER/children. Between repeats the pool
               must be back at its steady size.

Every wait is a poll with a deadline; the whole run has a time budget, and a
repeat that would not fit is skipped (the output says how many ran).
Servers bind 127.0.0.1 only and are stopped by pid at the end.
"""

import argparse
import ctypes
import os
import select
import signal
import socket
import statistics
import subprocess
import sys
import time

BURST_CONNECTIONS = 64
BURST_DEADLINE = 15.0          # s, from the first connect
BURST_POLL = 0.001             # s between accept-queue reads
PARTIAL_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n"   # no blank line: holds a worker
REPLACE_DEADLINE = 10.0        # s for a new child to appear
REPLACE_POLL = 0.0001          # s between reads of the children file
VICTIM_MIN_AGE = 1.1           # s a worker must have lived before we kill it
STABLE_WINDOW = 1.5            # s the worker count must not change ("warmed up")
WARMUP_DEADLINE = 20.0
START_DEADLINE = 10.0
STOP_DEADLINE = 10.0

now = time.monotonic


class Skip(Exception):
    """A server could not be started or measured; the reason is the message."""


class OutOfTime(Exception):
    pass


# --------------------------------------------------------------------------
# /proc helpers

def children_of(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except FileNotFoundError:
        return None


def listen_queue(port):
    """(rx_queue, tx_queue) of the LISTEN row for 127.0.0.1:port, or None."""
    want = f"0100007F:{port:04X}"
    with open("/proc/net/tcp") as f:
        f.readline()
        for line in f:
            fields = line.split()
            if fields[3] != "0A":
                # The kernel lists the listening hash first; past it, stop.
                break
            if fields[1] == want:
                tx, rx = fields[4].split(":")
                return int(rx, 16), int(tx, 16)
    return None


def start_time(pid):
    """Start time of a live (not zombie) process in clock ticks, else None."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _die_with_parent():
    # Servers get SIGTERM if this script dies without cleaning up.
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def http_get(port, timeout=2.0):
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1", "replace")


# --------------------------------------------------------------------------
# Servers

class Server:
    name = "?"
    forks = True  # False: one process serves, start() waits for no child

    def __init__(self, binary, workdir, tag):
        self.binary = binary
        self.workdir = workdir
        self.tag = tag
        self.proc = None
        self.port = None
        self.seen = {}  # worker pid -> its start time, so a reused pid is never mistaken
        self.log_path = os.path.join(workdir, f"{self.name}-{tag}.log")

    def command(self, settings):
        raise NotImplementedError

    def start(self, settings):
        for attempt in range(3):  # the port is picked before the server binds it
            self.port = free_port()
            cmd = self.command(settings)
            log = open(self.log_path, "ab")
            log.write(f"--- {' '.join(cmd)}\n".encode())
            log.flush()
            # Own session: Apache's shutdown signals its whole process group.
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                         cwd=self.workdir, preexec_fn=_die_with_parent,
                                         start_new_session=True)
            log.close()
            deadline = now() + START_DEADLINE
            while now() < deadline:
                if self.proc.poll() is not None:
                    break
                # Listening and forked: no request here, a probe would make the
                # pool grow past its configured size before we measure it.
                # check_serves() sends one after the measurement.
                kids = children_of(self.proc.pid)
                if (kids or not self.forks) and listen_queue(self.port) is not None:
                    self.remember(kids or [])
                    return
                time.sleep(0.01)
            code = self.proc.poll()
            self.stop()
            if code is None:
                break  # running but not answering: no point in another port
        raise Skip(f"{self.name} did not start: {self.log_tail()} (BENCH_KEEP=1 keeps {os.path.basename(self.log_path)})")

    def check_serves(self):
        """One whole request after the measurement: the figures count only if it is answered."""
        try:
            status = http_get(self.port)
        except OSError as e:
            status = str(e)
        if " 200 " not in status + " ":
            raise Skip(f"{self.name} did not answer a request with 200 ({status!r})")

    def log_tail(self, lines=3):
        try:
            with open(self.log_path, errors="replace") as f:
                tail = [l.strip() for l in f.readlines() if l.strip() and not l.startswith("---")]
            return " | ".join(tail[-lines:]) or "no log output"
        except OSError:
            return "no log"

    def remember(self, pids):
        for pid in pids:
            start = start_time(pid)
            if pid not in self.seen and start is not None:
                self.seen[pid] = start

    def children(self):
        kids = children_of(self.proc.pid)
        if kids is None:
            raise Skip(f"{self.name} master {self.proc.pid} is gone: {self.log_tail()}")
        self.remember(kids)
        return kids

    def wait_stable(self, window=STABLE_WINDOW, deadline_s=WARMUP_DEADLINE):
        """Waits until the set of workers has not changed for `window` s."""
        deadline = now() + deadline_s
        last = sorted(self.children())
        since = now()
        while now() < deadline:
            time.sleep(0.01)
            kids = sorted(self.children())
            if kids != last:
                last, since = kids, now()
            elif now() - since >= window:
                return len(kids)
        raise Skip(f"{self.name}: worker count still changing after {deadline_s:.0f} s")

    def stop(self):
        """SIGTERM the master, wait; SIGKILL it and any worker we saw if it hangs."""
        if self.proc is None:
            return None
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            kids = children_of(proc.pid) or []
            self.remember(kids)
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        # Its workers are ours too: wait for them, and SIGKILL by pid any that
        # outlived the master (same pid and same start time as when we saw it).
        mine = lambda: [pid for pid, start in self.seen.items() if start_time(pid) == start]
        deadline = now() + 2
        while mine() and now() < deadline:
            time.sleep(0.01)
        for pid in mine():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        self.seen = {}
        return proc.returncode


class Httpd(Server):
    name = "httpd"

    def command(self, s):
        # As root, workers run as nobody (Apache's run as www-data); httpd
        # refuses to run them as root unless told.
        user = ["--user", "nobody"] if os.geteuid() == 0 else []
        return [self.binary] + user + ["--listen", f"127.0.0.1:{self.port}",
                "--start-servers", str(s["start"]), "--min-spare-servers", str(s["min_spare"]),
                "--max-spare-servers", str(s["max_spare"]), "--max-clients", str(s["max_clients"]),
                os.path.join(self.workdir, "www")]


class Apache(Server):
    """Apache 2.4, mpm_prefork, from a config made here. Subclasses change
    the modules and the connection directives (this benchmark: no keep-alive)."""
    name = "apache"
    modules = ("mpm_prefork", "authz_core", "dir")

    def directives(self):
        return "KeepAlive Off\n"

    def command(self, s):
        d = os.path.join(self.workdir, f"apache-{self.tag}")
        os.makedirs(d, exist_ok=True)
        mods = "/usr/lib/apache2/modules"
        conf = os.path.join(d, "apache.conf")
        user = "User www-data\nGroup www-data\n" if os.geteuid() == 0 else ""
        modules = "\n".join(f"LoadModule {m}_module {mods}/mod_{m}.so" for m in self.modules)
        with open(conf, "w") as f:
            f.write(f"""ServerRoot {d}
ServerName localhost
DefaultRuntimeDir {d}
PidFile {d}/apache.pid
ErrorLog {self.log_path}
LogLevel warn
Mutex file:{d} default
{modules}
{user}Listen 127.0.0.1:{self.port}
Timeout 30
{self.directives()}StartServers {s['start']}
MinSpareServers {s['min_spare']}
MaxSpareServers {s['max_spare']}
ServerLimit {s['max_clients']}
MaxRequestWorkers {s['max_clients']}
MaxConnectionsPerChild 0
DocumentRoot {self.workdir}/www
DirectoryIndex index.html
<Directory />
    Require all granted
</Directory>
""")
        return [self.binary, "-f", conf, "-DFOREGROUND"]


class Nginx(Server):
    name = "nginx"
    worker_connections = 1024

    def directives(self):
        return """    default_type text/plain;
    client_header_timeout 30s;
    keepalive_timeout 0;
"""

    def command(self, s):
        d = os.path.join(self.workdir, f"nginx-{self.tag}")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "nginx.conf")
        temps = "\n".join(f"    {k}_temp_path {d}/{k}_temp;"
                          for k in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
        with open(conf, "w") as f:
            f.write(f"""worker_processes 1;
master_process on;
pid {d}/nginx.pid;
error_log {self.log_path} warn;
events {{ worker_connections {self.worker_connections}; }}
http {{
    access_log off;
{self.directives()}{temps}
    server {{
        listen 127.0.0.1:{self.port};
        root {self.workdir}/www;
        index index.html;
    }}
}}
""")
        return [self.binary, "-p", d + "/", "-c", conf, "-e", self.log_path, "-g", "daemon off;"]


# --------------------------------------------------------------------------
# Measurements

class Budget:
    def __init__(self, seconds):
        self.end = now() + seconds

    def left(self):
        return self.end - now()

    def need(self, seconds):
        if self.left() < seconds:
            raise OutOfTime()


def burst_once(server):
    """One burst on a fresh, warmed-up server. Returns a dict of results."""
    workers_before = server.wait_stable()
    q = listen_queue(server.port)
    if q is None or q[0] != 0:
        raise Skip(f"{server.name}: accept queue not empty before the burst ({q})")
    socks = []
    result = {"workers_before": workers_before}
    try:
        t0 = now()
        for _ in range(BURST_CONNECTIONS):
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.settimeout(5)
            s.connect(("127.0.0.1", server.port))
            s.sendall(PARTIAL_REQUEST)
            socks.append(s)
        t_connected = now()
        deadline = t0 + BURST_DEADLINE
        peak = 0
        first_zero = None
        while True:
            q = listen_queue(server.port)
            t = now()
            if q is None:
                raise Skip(f"{server.name} stopped listening during the burst: {server.log_tail()}")
            rx = q[0]
            peak = max(peak, rx)
            if rx == 0:
                if first_zero is not None:   # zero twice in a row: done
                    break
                first_zero = t
            else:
                first_zero = None
            if t >= deadline:
                break
            time.sleep(BURST_POLL)
        result["connect_ms"] = (t_connected - t0) * 1000
        result["peak_queue"] = peak
        if first_zero is not None:
            result["ms"] = (first_zero - t0) * 1000
        else:
            result["ms"] = None
            result["left"] = rx
        result["workers_after"] = len(server.children())
        # Every connection must still be open and unanswered (held by someone).
        readable, _, _ = select.select(socks, [], [], 0)
        result["answered"] = len(readable)
    finally:
        for s in socks:
            s.close()  # SO_LINGER 0: reset, no TIME_WAIT pile-up
    return result


def replacement_runs(server, repeats, budget, log, expected):
    steady = server.wait_stable()
    if steady != expected:
        log(f"  {server.name}: pool settled at {steady} workers, not {expected}; with more idle "
            f"workers than min spare a kill need not be replaced")
    first_seen = {pid: now() - VICTIM_MIN_AGE for pid in server.children()}
    times, misses = [], 0
    for i in range(repeats):
        if budget.left() < REPLACE_DEADLINE / 2 + VICTIM_MIN_AGE:
            log(f"  (time budget reached: {server.name} gets {i} of {repeats} kills)")
            break
        kids = server.children()
        for pid in kids:
            first_seen.setdefault(pid, now())
        victim = min(kids, key=lambda p: (first_seen[p], p))
        wait = first_seen[victim] + VICTIM_MIN_AGE - now()
        if wait > 0:
            time.sleep(wait)  # pacing only: the victim must be settled
        before = set(server.children())
        if victim not in before:
            continue
        t0 = now()
        os.kill(victim, signal.SIGKILL)
        deadline = t0 + REPLACE_DEADLINE
        new = None
        while now() < deadline:
            kids = children_of(server.proc.pid)
            if kids is None:
                raise Skip(f"{server.name} master died after a worker was killed: {server.log_tail()}")
            fresh = [p for p in kids if p not in before]
            if fresh:
                t1 = now()
                new = fresh
                break
            time.sleep(REPLACE_POLL)
        if new is None:
            misses += 1
            log(f"  {server.name}: no new worker {REPLACE_DEADLINE:.0f} s after killing {victim}")
        else:
            times.append((t1 - t0) * 1000)
            for pid in new:
                first_seen[pid] = t1
        server.remember(new or [])
        # Back to steady: the victim reaped and the pool at its size again.
        back_deadline = now() + REPLACE_DEADLINE
        while now() < back_deadline:
            kids = server.children()
            if victim not in kids and len(kids) == steady:
                break
            time.sleep(0.001)
        else:
            log(f"  {server.name}: pool not back at {steady} workers after repeat {i + 1} "
                f"(has {len(server.children())}); stopping its repeats")
            break
    return {"times": times, "misses": misses, "steady": steady, "repeats": repeats}


# --------------------------------------------------------------------------
# Report

def fmt_ms(v):
    if v is None:
        return "n/a"
    if v >= 100:
        return f"{v:.0f} ms"
    if v >= 10:
        return f"{v:.1f} ms"
    return f"{v:.2f} ms"


def p90(values):
    v = sorted(values)
    return v[min(len(v) - 1, int(round(0.9 * (len(v) - 1))))]


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "n/a"
    r = a / b
    return f"{r:.3g}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--httpd", required=True)
    ap.add_argument("--apache", default="")
    ap.add_argument("--nginx", default="")
    ap.add_argument("--burst-runs", type=int, default=5)
    ap.add_argument("--replace-runs", type=int, default=20)
    ap.add_argument("--apache-replace-runs", type=int, default=5)
    ap.add_argument("--budget", type=float, default=170, help="seconds for the whole run")
    args = ap.parse_args()

    def log(msg):
        print(msg, flush=True)

    # SIGTERM/SIGHUP to us: unwind through the finally blocks that stop servers.
    def on_term(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    www = os.path.join(args.workdir, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "index.html"), "w") as f:
        f.write("hello\n")
    os.chmod(args.workdir, 0o711)   # Apache's and nginx's workers run as www-data / nobody
    os.chmod(www, 0o755)
    os.chmod(os.path.join(www, "index.html"), 0o644)

    kinds = [("httpd", Httpd, args.httpd), ("apache", Apache, args.apache), ("nginx", Nginx, args.nginx)]
    notes = {}        # name -> why it is n/a
    for name, _, binary in kinds:
        if not binary:
            notes[name] = "not installed"
        elif not os.access(binary, os.X_OK):
            notes[name] = f"{binary} is not executable"

    budget = Budget(args.budget)
    burst_budget = Budget(max(30.0, args.budget - 60))  # keep a minute for the replacements
    burst_settings = dict(start=2, min_spare=5, max_spare=10, max_clients=256)
    steady_settings = dict(start=5, min_spare=5, max_spare=10, max_clients=256)
    bursts = {name: [] for name, _, _ in kinds}
    burst_extra = {name: [] for name, _, _ in kinds}
    exit_codes = {name: set() for name, _, _ in kinds}

    log(f"bench_pool: {BURST_CONNECTIONS} held connections per burst, up to {args.burst_runs} bursts "
        f"per server (fresh server each); replacement: {args.replace_runs} kills "
        f"({args.apache_replace_runs} for apache)")
    for name, _, binary in kinds:
        log(f"  {name:6} {binary or '-'}" + (f"  ({notes[name]})" if name in notes else ""))

    # ---- burst: runs interleaved across servers, a fresh server for each
    try:
        for run in range(args.burst_runs):
            for name, cls, binary in kinds:
                if name in notes:
                    continue
                # a slow burst (apache) costs its deadline plus the warm-up
                burst_budget.need(BURST_DEADLINE + 6 if name == "apache" else 5)
                server = cls(binary, args.workdir, f"burst{run}")
                try:
                    server.start(burst_settings)
                    r = burst_once(server)
                    server.check_serves()
                    bursts[name].append(r["ms"])
                    burst_extra[name].append(r)
                    log(f"  burst {run + 1} {name:6}: "
                        + (f"{fmt_ms(r['ms'])}" if r["ms"] is not None
                           else f"not done after {BURST_DEADLINE:.0f} s ({r['left']} still queued)")
                        + f"  (connects took {r['connect_ms']:.1f} ms, peak queue {r['peak_queue']}, "
                        f"workers {r['workers_before']} -> {r['workers_after']}, "
                        f"answered early {r['answered']})")
                except Skip as e:
                    notes[name] = str(e)
                    log(f"  burst {run + 1} {name:6}: {e}")
                finally:
                    code = server.stop()
                    if code is not None:
                        exit_codes[name].add(code)
    except OutOfTime:
        log("  (time budget reached: fewer burst runs than asked)")
    except KeyboardInterrupt:
        log("interrupted")
        return 130

    # ---- replacement: one steady server per kind
    replaces = {}
    try:
        for name, cls, binary in kinds:
            if name in notes and not bursts[name]:
                continue
            budget.need(8)
            server = cls(binary, args.workdir, "replace")
            repeats = args.apache_replace_runs if name == "apache" else args.replace_runs
            try:
                server.start(steady_settings)
                expected = 1 if name == "nginx" else steady_settings["start"]
                r = replacement_runs(server, repeats, budget, log, expected)
                server.check_serves()
                replaces[name] = r
                r = replaces.get(name)
                if r:
                    log(f"  replacement {name:6}: {len(r['times'])} of {r['repeats']} kills, steady pool "
                        f"{r['steady']}, ms: " + " ".join(f"{t:.2f}" for t in r["times"])
                        + (f"; {r['misses']} not replaced" if r["misses"] else ""))
            except Skip as e:
                notes.setdefault(name, str(e))
                log(f"  replacement {name:6}: {e}")
            finally:
                code = server.stop()
                if code is not None:
                    exit_codes[name].add(code)
    except OutOfTime:
        log("  (time budget reached: replacement skipped for the remaining servers)")
    except KeyboardInterrupt:
        log("interrupted")
        return 130

    # ---- table
    burst_med, repl_med, repl_p90 = {}, {}, {}
    burst_text, repl_text = {}, {}
    for name, _, _ in kinds:
        values = bursts[name]
        if values and all(v is not None for v in values):
            burst_med[name] = statistics.median(values)
            burst_text[name] = fmt_ms(burst_med[name])
        elif values:
            done = [v for v in values if v is not None]
            burst_med[name] = None
            burst_text[name] = f">{BURST_DEADLINE:.0f} s ({len(values) - len(done)}/{len(values)})"
        else:
            burst_med[name] = None
            burst_text[name] = "n/a"
        r = replaces.get(name)
        if r and r["times"] and not r["misses"]:
            repl_med[name] = statistics.median(r["times"])
            repl_p90[name] = p90(r["times"])
            repl_text[name] = fmt_ms(repl_med[name])
        elif r and r["misses"]:
            repl_med[name] = None
            repl_text[name] = f"{r['misses']} never"
        else:
            repl_med[name] = None
            repl_text[name] = "n/a"

    names = [n for n, _, _ in kinds]
    nruns = {n: len(bursts[n]) for n in names}
    nrepl = {n: len(replaces[n]["times"]) if n in replaces else 0 for n in names}
    w = 14
    print()
    print(f"{'pool reaction (median)':44}" + "".join(f"{n:>{w}}" for n in names))
    print(f"{'burst: 64 held connections accepted in':44}" + "".join(f"{burst_text[n]:>{w}}" for n in names))
    print(f"{'  runs':44}" + "".join(f"{nruns[n]:>{w}}" for n in names))
    print(f"{'worker replaced after SIGKILL':44}" + "".join(f"{repl_text[n]:>{w}}" for n in names))
    print(f"{'  p90':44}" + "".join(f"{fmt_ms(repl_p90.get(n)):>{w}}" for n in names))
    print(f"{'  kills':44}" + "".join(f"{nrepl[n]:>{w}}" for n in names))
    floor = [r["connect_ms"] for r in burst_extra["httpd"]]
    if floor:
        print(f"(the burst figure includes the client's own 64 connects: median "
              f"{statistics.median(floor):.1f} ms for httpd's runs)")
    h_b, h_r = burst_med.get("httpd"), repl_med.get("httpd")
    print(f"ratios: burst httpd/apache {ratio(h_b, burst_med.get('apache'))}, "
          f"httpd/nginx {ratio(h_b, burst_med.get('nginx'))}; "
          f"replacement httpd/apache {ratio(h_r, repl_med.get('apache'))}, "
          f"httpd/nginx {ratio(h_r, repl_med.get('nginx'))}")
    verdict = lambda v, limit: "n/a" if v is None else ("PASS" if v <= limit else "FAIL")
    b_verdict = verdict(h_b, 200)
    if h_b is None and bursts["httpd"]:
        b_verdict = "FAIL"
    r_verdict = verdict(h_r, 10)
    if h_r is None and replaces.get("httpd", {}).get("misses"):
        r_verdict = "FAIL"
    print(f"targets: burst <= 200 ms: {b_verdict}; replacement <= 10 ms: {r_verdict}")
    for name in names:
        if name in notes:
            print(f"note: {name}: {notes[name]}")
    bad_exit = sorted(c for c in exit_codes["httpd"] if c != 0)
    if bad_exit:
        print(f"note: httpd exited with status {bad_exit} after SIGTERM (expected 0)")

    httpd_measured = bool(bursts["httpd"]) and "httpd" in replaces
    return 0 if httpd_measured else 1


if __name__ == "__main__":
    sys.exit(main())
