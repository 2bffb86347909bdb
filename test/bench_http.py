#!/usr/bin/env python3
"""bench_http.py - HTTP throughput, server CPU and worker memory of httpd
and three peers.

Run through test/bench.sh, which makes the scratch directory and picks the
binaries. All four servers in the same run, each from a config made here,
on a loopback port, serving the same DOCROOT:

  hello.txt   14 bytes ("hello, world!\\n")
  100k.bin    100 KiB

  httpd     --start-servers 5 --min-spare-servers 5 --max-spare-servers 10
            --max-clients 256 (keep-alive timeout 5 s, its default)
  apache    mpm_prefork with the same pool settings; mpm_prefork, authz_core,
            mime and dir only; KeepAlive On, MaxKeepAliveRequests 0
            (unlimited), KeepAliveTimeout 5, EnableSendfile On; no access log
  nginx     worker_processes 1; worker_connections 1024; sendfile on;
            keepalive_requests 1000000; keepalive_timeout 5s; access_log off
  lighttpd  one process (no workers); max-keep-alive-requests 65535 (the
            most it takes; 0 would turn keep-alive off),
            max-keep-alive-idle 5; default network backend; no access log;
            as root it runs as www-data; errors go to its stderr

The servers (masters and workers) run on one core (taskset -c A), wrk on
another (taskset -c B). All four run at once, each on its own port:

  1. start each in turn; wait until its worker set has been unchanged for
     1.5 s; Private_Dirty of each worker from /proc/PID/smaps_rollup
     ("idle"; lighttpd: its one process); check that both files come back
     whole with 200; warm up: short keep-alive wrk runs on the 14-byte file
     until the worker count after a run is no higher than after the one
     before (bounded in count and time);
  2. measure in rounds: in each, every test (keep-alive on the 14-byte
     file, "Connection: close" on the 14-byte file, keep-alive on the
     100 KiB file) on every server, the servers taking turns in an order
     that rotates each round, so a slow spell of this noisy machine falls
     on all of them alike. --order reverse starts from the other end.
     Each measured run follows an unmeasured one on the same test that lets
     a pool shrunk in the meantime grow back. The median over the rounds
     counts. Socket errors and non-2xx/3xx answers are reported. Each run's
     line shows how busy the server's and wrk's cores were (by anything, so
     other work shows there too) and the server's CPU per request: the
     busy jiffies of the server's core (/proc/stat) during the run divided
     by the requests wrk made;
  3. Private_Dirty of each worker again ("after load"), once wrk has gone.

Then the servers are stopped, and 1,000 kept-alive clients (wrk -t1 -c1000
--latency on the 14-byte file, skipped with --c1000 0) are measured once
per server, each started alone with its own config, warmed up as above
with the same wrk, then one measured run: httpd with the pool above, httpd
with --max-clients 1100, nginx with worker_connections 4096, lighttpd with
max-connections 2048 and max-fds 8192. Before it the open-file limit is
raised (RLIMIT_NOFILE, inherited by wrk and the servers). Prints req/s,
p99 and average latency, errors, workers and CPU per request.

Prints a table with the ratios of httpd to each peer, and the targets of
issue 14 as "met" / "NOT met" lines (httpd >= 1.3x nginx on keep-alive,
>= 1.0x on close and 100 KiB, Private_Dirty <= 64 KiB per worker idle and
after load); they do not change the exit status, which is 0 when httpd was
measured and 1 when it was not.

Per-worker memory is the median over the master's children (nginx: its one
worker). Servers bind 127.0.0.1 only and are stopped by pid; wrk runs under a
timeout and is killed by pid if it overruns. Helpers (process and port
handling, starting and stopping) come from bench_pool.py.
"""

import argparse
import os
import re
import resource
import signal
import socket
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_pool  # noqa: E402  (the pool benchmark: servers, /proc helpers)
from bench_pool import Skip, children_of, now  # noqa: E402

SMALL = b"hello, world!\n"
SMALL_NAME = "hello.txt"
BIG_SIZE = 100 * 1024
BIG_NAME = "100k.bin"
POOL = dict(start=5, min_spare=5, max_spare=10, max_clients=256)
KEEPALIVE_TIMEOUT = 5
WARMUP_RUN_S = 2
WARMUP_MAX_RUNS = 8
WARMUP_DEADLINE = 30.0
REWARM_S = 2                # unmeasured run before each measured one
WRK_GRACE = 15.0            # s past -d before a wrk run is killed
TESTS = [
    ("ka_small", "keep-alive, 14 B", SMALL_NAME, False),
    ("close_small", "Connection: close, 14 B", SMALL_NAME, True),
    ("ka_big", "keep-alive, 100 KiB", BIG_NAME, False),
]
MEM_TARGET_KIB = 64
# Issue 14's targets: httpd / nginx (1 worker) req/s, per test.
TARGETS = {"ka_small": 1.3, "close_small": 1.0, "ka_big": 1.0}
IDLE_BUSY = 10              # % busy of a core before the start above which we warn
WRK_BOUND = 95              # % busy of wrk's core above which a figure is wrk's limit
C1000 = 1000                # clients of the 1,000-connection section
C1000_MAX_CLIENTS = 1100    # httpd's --max-clients there, beside the default pool
C1000_NOFILE = 8192         # open-file limit raised to for it
CLK_TCK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------
# Servers: bench_pool's, with this benchmark's configs, pinned to a core

class Pinned:
    """Mixin: the command runs under taskset; the pid stays the server's (taskset execs)."""
    cpu = None

    def command(self, settings):
        cmd = self.server_command(settings)
        return (["taskset", "-c", str(self.cpu)] + cmd) if self.cpu is not None else cmd

    def check_serves(self):
        check_files(self)


class Httpd(Pinned, bench_pool.Httpd):
    def server_command(self, s):
        # bench_pool's command already ends with the docroot, workdir/www.
        return bench_pool.Httpd.command(self, s) + ["--keepalive-timeout", str(KEEPALIVE_TIMEOUT)]


class Apache(Pinned, bench_pool.Apache):
    modules = bench_pool.Apache.modules + ("mime",)

    def directives(self):
        return f"""KeepAlive On
MaxKeepAliveRequests 0
KeepAliveTimeout {KEEPALIVE_TIMEOUT}
EnableSendfile On
TypesConfig /etc/mime.types
"""

    def server_command(self, s):
        return bench_pool.Apache.command(self, s)


class Nginx(Pinned, bench_pool.Nginx):
    def directives(self):
        return f"""    sendfile on;
    keepalive_requests 1000000;
    keepalive_timeout {KEEPALIVE_TIMEOUT}s;
    types {{ text/plain txt; application/octet-stream bin; }}
    default_type application/octet-stream;
"""

    def server_command(self, s):
        return bench_pool.Nginx.command(self, s)


class Nginx1000(Nginx):
    worker_connections = 4096


class Lighttpd(Pinned, bench_pool.Server):
    """lighttpd 1.4 from a config made here; one process, no workers.
    No server.errorlog: lighttpd opens it after dropping root, so its
    errors go to stderr, which is our log file."""
    name = "lighttpd"
    forks = False
    max_connections = None  # its defaults; the 1,000-client section raises it

    def server_command(self, s):
        d = os.path.join(self.workdir, f"lighttpd-{self.tag}")
        os.makedirs(d, exist_ok=True)
        conf = os.path.join(d, "lighttpd.conf")
        user = 'server.username = "www-data"\nserver.groupname = "www-data"\n' if os.geteuid() == 0 else ""
        limits = ""
        if self.max_connections:
            limits = (f"server.max-connections = {self.max_connections}\n"
                      f"server.max-fds = {4 * self.max_connections}\n")
        with open(conf, "w") as f:
            f.write(f"""server.document-root = "{self.workdir}/www"
server.bind = "127.0.0.1"
server.port = {self.port}
{user}server.pid-file = "{d}/lighttpd.pid"
server.max-keep-alive-requests = 65535
server.max-keep-alive-idle = {KEEPALIVE_TIMEOUT}
{limits}mimetype.assign = (".txt" => "text/plain", ".bin" => "application/octet-stream")
index-file.names = ("index.html")
""")
        return [self.binary, "-D", "-f", conf]


class Lighttpd1000(Lighttpd):
    max_connections = 2048


# --------------------------------------------------------------------------
# Checks and measurements

def fetch(port, path, timeout=5.0):
    """One GET with Connection: close; (status line, head, body)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(f"GET /{path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
        data = b""
        deadline = now() + timeout
        while now() < deadline:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b"\r\n", 1)[0].decode("latin-1", "replace")
    return status, head, body


def check_files(server):
    """Both files must come back whole with 200, or the server is n/a."""
    want = {SMALL_NAME: SMALL, BIG_NAME: None}
    for path, body_want in want.items():
        try:
            status, _, body = fetch(server.port, path)
        except OSError as e:
            raise Skip(f"{server.name}: GET /{path} failed: {e}")
        size_ok = len(body) == (len(body_want) if body_want is not None else BIG_SIZE)
        if " 200 " not in status + " " or not size_ok or (body_want is not None and body != body_want):
            raise Skip(f"{server.name}: GET /{path} answered {status!r} with {len(body)} bytes")


def private_dirty_kib(pid):
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Private_Dirty:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def worker_memory(server):
    """(median Private_Dirty KiB over the workers, worker count, master's KiB).
    A server of one process (lighttpd): (its KiB, 1, None)."""
    if not server.forks:
        v = private_dirty_kib(server.proc.pid)
        return v, (1 if v is not None else 0), None
    values = [v for v in (private_dirty_kib(p) for p in server.children()) if v is not None]
    master = private_dirty_kib(server.proc.pid)
    return (statistics.median(values) if values else None), len(values), master


def cpu_times(cpu):
    """(busy, total) jiffies of one cpu from /proc/stat, or None."""
    try:
        with open("/proc/stat") as f:
            for line in f:
                if line.startswith(f"cpu{cpu} "):
                    v = [int(x) for x in line.split()[1:]]
                    idle = v[3] + (v[4] if len(v) > 4 else 0)
                    return sum(v[:8]) - idle, sum(v[:8])
    except OSError:
        pass
    return None


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def to_ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)] if m else None


def parse_wrk(out):
    r = {"rps": None, "requests": None, "errors": {}, "non2xx": 0, "lat_avg": None, "lat_max": None}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", out, re.M)
    if m:
        r["rps"] = float(m.group(1))
    m = re.search(r"^\s*(\d+) requests in ([\d.]+\w+), ([\d.]+\w+) read", out, re.M)
    if m:
        r["requests"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if m:
        r["errors"] = {k: int(v) for k, v in zip(("connect", "read", "write", "timeout"), m.groups())
                       if int(v)}
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if m:
        r["non2xx"] = int(m.group(1))
    m = re.search(r"^\s*Latency\s+(\S+)\s+(\S+)\s+(\S+)", out, re.M)
    if m:
        r["lat_avg"], r["lat_max"] = to_ms(m.group(1)), to_ms(m.group(3))
    m = re.search(r"^\s*99(?:\.0+)?%\s+(\S+)", out, re.M)   # with --latency
    r["p99"] = to_ms(m.group(1)) if m else None
    return r


class Wrk:
    def __init__(self, binary, cpu, threads, connections, server_cpu, latency=False):
        self.binary, self.cpu, self.threads, self.connections = binary, cpu, threads, connections
        self.server_cpu, self.latency = server_cpu, latency

    def run(self, port, path, close, seconds):
        """One wrk run; parse_wrk's figures plus busy / client_busy (% of
        each core) and cpu_us (the server core's busy time per request)."""
        cmd = [self.binary, f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s"]
        if self.latency:
            cmd.append("--latency")
        if close:
            cmd += ["-H", "Connection: close"]
        cmd.append(f"http://127.0.0.1:{port}/{path}")
        if self.cpu is not None:
            cmd = ["taskset", "-c", str(self.cpu)] + cmd
        cores = [c for c in (self.server_cpu, self.cpu) if c is not None]
        before = [cpu_times(c) for c in cores]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, text=True)
        try:
            out, _ = proc.communicate(timeout=seconds + WRK_GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise Skip(f"wrk did not finish within {seconds + WRK_GRACE:.0f} s on /{path}")
        after = [cpu_times(c) for c in cores]
        r = parse_wrk(out)
        if r["rps"] is None:
            raise Skip(f"wrk gave no figure (exit {proc.returncode}): {out.strip()[-300:]!r}")
        # How busy each core was (by anything: other work shows up here too).
        busy = [100.0 * (a[0] - b[0]) / (a[1] - b[1]) if a and b and a[1] > b[1] else None
                for b, a in zip(before, after)]
        r["busy"], r["client_busy"] = (busy + [None, None])[:2]
        r["cpu_us"] = None
        if self.server_cpu is not None and before[0] and after[0] and r["requests"]:
            r["cpu_us"] = (after[0][0] - before[0][0]) / CLK_TCK * 1e6 / r["requests"]
        return r


def warm_up(server, wrk, log):
    """Keep-alive runs on the small file until the pool stops growing."""
    counts = []
    deadline = now() + WARMUP_DEADLINE
    for _ in range(WARMUP_MAX_RUNS):
        if now() + WARMUP_RUN_S + WRK_GRACE > deadline and counts:
            break
        wrk.run(server.port, SMALL_NAME, False, WARMUP_RUN_S)
        counts.append(len(server.children()))
        if len(counts) >= 2 and counts[-1] <= counts[-2]:
            log(f"  {server.name}: warmed up, workers after each {WARMUP_RUN_S} s run: "
                + " ".join(map(str, counts)))
            return counts[-1]
    log(f"  {server.name}: worker count still growing after the warm-up "
        f"({' '.join(map(str, counts))}); measuring anyway")
    return counts[-1] if counts else None


def describe(r):
    text = f"{r['rps']:9.0f} req/s"
    if r["lat_avg"] is not None:
        text += f"  latency avg {r['lat_avg']:.2f} ms max {r['lat_max']:.1f} ms"
        if r.get("p99") is not None:
            text += f" p99 {r['p99']:.1f} ms"
    if r.get("busy") is not None:
        text += f"  cpu busy: server core {r['busy']:.0f}%"
        if r.get("client_busy") is not None:
            text += f", wrk core {r['client_busy']:.0f}%"
    if r.get("cpu_us") is not None:
        text += f"  server {r['cpu_us']:.1f} µs/req"
    bad = []
    if r["errors"]:
        bad.append("socket errors " + ", ".join(f"{k} {v}" for k, v in r["errors"].items()))
    if r["non2xx"]:
        bad.append(f"{r['non2xx']} non-2xx/3xx")
    if bad:
        text += "  !! " + "; ".join(bad)
    return text


def prepare(server, wrk, log):
    """Starts the server, lets it settle, reads its idle memory and warms it up."""
    res = {"runs": {k: [] for k, _, _, _ in TESTS}, "problems": []}
    server.start(POOL)
    server.wait_stable()
    res["idle"] = worker_memory(server)
    server.check_serves()
    res["warm_workers"] = warm_up(server, wrk, log)
    return res


def measure_round(servers, results, wrk, round_no, seconds, log):
    """One run of every test on every server, servers taking turns (the
    order rotates each round), so a slow spell of the machine falls on all
    of them. Each measured run follows an unmeasured one of REWARM_S on the
    same test: a pool that shrank while the others were measured grows back
    first."""
    order = servers[round_no % len(servers):] + servers[:round_no % len(servers)]
    for key, label, path, close in TESTS:
        for server in order:
            wrk.run(server.port, path, close, REWARM_S)
            r = wrk.run(server.port, path, close, seconds)
            res = results[server.name]
            res["runs"][key].append(r)
            log(f"  {server.name:8} {label:24} run {round_no + 1}: {describe(r)}")
            if r["errors"] or r["non2xx"]:
                res["problems"].append(f"{label} run {round_no + 1}: {describe(r).split('!! ')[1]}")


def finish(server, res):
    """Memory after the load (once wrk's connections are gone), a last check, stop."""
    time.sleep(0.3)
    res["after"] = worker_memory(server)
    server.check_serves()


# --------------------------------------------------------------------------
# 1,000 kept-alive clients

C1000_SETUP = 10  # s per server besides the measured run: start, warm-up, stop (estimate)
C1000_GROWTH = 15  # s more for httpd's pool growing towards 1,000 in its warm-up


def raise_nofile(want):
    """Raises the soft open-file limit of this process (and so of what it
    starts from now on) to want, at most the hard limit; returns the soft
    limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
        except (ValueError, OSError):
            pass
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def c1000_entries(binaries):
    """(label, server name, class, pool settings, tag) of each run."""
    return [
        ("httpd, defaults (max 256)", "httpd", Httpd, POOL, "c1000"),
        (f"httpd, --max-clients {C1000_MAX_CLIENTS}", "httpd", Httpd,
         dict(POOL, max_clients=C1000_MAX_CLIENTS), "c1000max"),
        ("nginx, 1 worker", "nginx", Nginx1000, POOL, "c1000"),
        ("lighttpd", "lighttpd", Lighttpd1000, POOL, "c1000"),
    ]


def measure_c1000(server, pool, wrk, seconds, log):
    """Starts the server alone, warms it up with the 1,000 clients, measures
    one run and stops it. Raises Skip."""
    try:
        server.start(pool)
        server.wait_stable()
        server.check_serves()
        warm_up(server, wrk, log)
        r = wrk.run(server.port, SMALL_NAME, False, seconds)
        r["workers"] = len(server.children()) if server.forks else None
        return r
    finally:
        server.stop()


# --------------------------------------------------------------------------
# Report

def fmt(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def verdict(ok):
    return "n/a" if ok is None else ("met" if ok else "NOT met")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--httpd", required=True)
    ap.add_argument("--apache", default="")
    ap.add_argument("--nginx", default="")
    ap.add_argument("--lighttpd", default="")
    ap.add_argument("--wrk", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured wrk run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--budget", type=float, default=660, help="seconds for the whole run")
    ap.add_argument("--order", choices=("forward", "reverse"), default="forward",
                    help="the order the servers start and take turns in")
    ap.add_argument("--c1000", type=int, default=1, help="0 skips the 1,000-client section")
    args = ap.parse_args()

    def log(msg):
        print(msg, flush=True)

    def on_term(sig, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    if not args.wrk:
        log("bench_http: wrk is not installed; nothing can be measured")
        return 1

    www = os.path.join(args.workdir, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, SMALL_NAME), "wb") as f:
        f.write(SMALL)
    with open(os.path.join(www, BIG_NAME), "wb") as f:
        f.write(bytes((i * 7 + 13) & 0xFF for i in range(BIG_SIZE)))
    os.chmod(args.workdir, 0o711)   # the peers' workers run as www-data / nobody
    os.chmod(www, 0o755)
    for name in (SMALL_NAME, BIG_NAME):
        os.chmod(os.path.join(www, name), 0o644)

    # Cores: the server on the first we may use, wrk on the second.
    cpus = sorted(os.sched_getaffinity(0))
    have_taskset = subprocess.call(["sh", "-c", "command -v taskset"], stdout=subprocess.DEVNULL) == 0
    if len(cpus) >= 2 and have_taskset:
        server_cpu, wrk_cpu = cpus[0], cpus[1]
        pinning = f"server on cpu {server_cpu}, wrk on cpu {wrk_cpu} (taskset)"
    else:
        server_cpu = wrk_cpu = None
        pinning = "no pinning (needs two cores and taskset)"
    Pinned.cpu = server_cpu
    wrk = Wrk(args.wrk, wrk_cpu, args.threads, args.connections, server_cpu)

    kinds = [("httpd", Httpd, args.httpd), ("apache", Apache, args.apache),
             ("nginx", Nginx, args.nginx), ("lighttpd", Lighttpd, args.lighttpd)]
    names = [n for n, _, _ in kinds]       # the table's order, whatever the run's
    if args.order == "reverse":
        kinds.reverse()
    binaries = {n: b for n, _, b in kinds}
    missing = {}
    for name, _, binary in kinds:
        if not binary:
            missing[name] = "not installed"
        elif not os.access(binary, os.X_OK):
            missing[name] = f"{binary} is not executable"
    notes = dict(missing)

    # Fit the repeats into the budget: per server about 12 s of start,
    # warm-up and stop, plus the measured runs; then the 1,000-client runs.
    repeats = max(1, args.repeats)
    servers = sum(1 for n, _, _ in kinds if n not in notes)
    per_run = args.duration + REWARM_S + 1
    c1000_runs = [e for e in c1000_entries(binaries) if e[1] not in missing] if args.c1000 else []
    c1000_cost = len(c1000_runs) * (C1000_SETUP + args.duration) + (C1000_GROWTH if c1000_runs else 0)
    while repeats > 1 and servers * (12 + len(TESTS) * repeats * per_run) + c1000_cost > args.budget:
        repeats -= 1
    budget = bench_pool.Budget(args.budget)

    log(f"bench_http: wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{repeats} run(s) per figure (median), {pinning}")
    log(f"  order: {', '.join(n for n, _, _ in kinds)} ({args.order}; each round starts one "
        f"further on; BENCH_ORDER=reverse starts from the other end)")
    log(f"  files: /{SMALL_NAME} ({len(SMALL)} B), /{BIG_NAME} ({BIG_SIZE} B); pool: start 5, "
        f"spare 5..10, max 256; keep-alive timeout {KEEPALIVE_TIMEOUT} s")
    for name, _, binary in kinds:
        log(f"  {name:8} {binary or '-'}" + (f"  ({notes[name]})" if name in notes else ""))
    log(f"  wrk      {args.wrk}")
    # How busy the two cores are now, over a second. Not the load average:
    # a run just before (its 1,000-client section, hundreds of workers
    # woken) leaves that high for minutes on an idle machine.
    cores = [c for c in (server_cpu, wrk_cpu) if c is not None] or cpus[:2]
    before = [cpu_times(c) for c in cores]
    time.sleep(1)
    after = [cpu_times(c) for c in cores]
    busy = [100.0 * (a[0] - b[0]) / (a[1] - b[1]) for b, a in zip(before, after)
            if a and b and a[1] > b[1]]
    if busy and max(busy) > IDLE_BUSY:
        log(f"  warning: cpu {', '.join(map(str, cores))} busy "
            f"{' / '.join(f'{b:.0f}%' for b in busy)} in the second before the start: "
            f"other work on these cores lowers and scatters the figures")

    results = {}
    servers = []  # started, stopped in the end whatever happens
    rounds = 0
    c1000 = []    # (label, result or None, note)
    try:
        try:
            for name, cls, binary in kinds:
                if name in notes:
                    continue
                server = cls(binary, args.workdir, "http")
                servers.append(server)
                try:
                    results[name] = prepare(server, wrk, log)
                except Skip as e:
                    notes[name] = str(e)
                    log(f"  {name}: {e}")
                    results.pop(name, None)
                    server.stop()
                    servers.remove(server)
            for i in range(repeats if servers else 0):
                if i > 0 and budget.left() < len(servers) * len(TESTS) * per_run + 5 + c1000_cost:
                    log(f"  (time budget reached after {i} of {repeats} rounds)")
                    break
                measure_round(servers, results, wrk, i, args.duration, log)
                rounds = i + 1
            for server in servers:
                try:
                    finish(server, results[server.name])
                except Skip as e:
                    notes[server.name] = str(e)
        finally:
            for server in servers:
                code = server.stop()
                if server.name in results:
                    results[server.name]["exit"] = code

        if args.c1000:
            nofile = raise_nofile(C1000_NOFILE)
            wrk1000 = Wrk(args.wrk, wrk_cpu, 1, C1000, server_cpu, latency=True)
            log(f"1,000 kept-alive clients: wrk -t1 -c{C1000} -d{args.duration}s --latency on "
                f"/{SMALL_NAME}, one run per server, each alone, after a warm-up "
                f"(open-file limit {nofile})")
            entries = c1000_entries(binaries)
            if args.order == "reverse":
                entries.reverse()
            for label, name, cls, pool, tag in entries:
                if name in missing:
                    c1000.append((label, None, missing[name]))
                elif nofile < C1000 + 64:
                    c1000.append((label, None, f"open-file limit {nofile}, too low"))
                elif budget.left() < args.duration + 5:
                    c1000.append((label, None, "time budget reached"))
                else:
                    try:
                        r = measure_c1000(cls(binaries[name], args.workdir, tag), pool, wrk1000,
                                          args.duration, log)
                        log(f"  {label:28} {describe(r)}")
                        c1000.append((label, r, None))
                    except Skip as e:
                        log(f"  {label}: {e}")
                        c1000.append((label, None, str(e)))
    except KeyboardInterrupt:
        log("interrupted")
        return 130

    # ---- table
    med = {n: {} for n in names}
    cpu = {n: {} for n in names}
    wrk_busy = {n: {} for n in names}
    for n in names:
        r = results.get(n)
        for key, _, _, _ in TESTS:
            runs = r["runs"][key] if r else []
            for table, field in ((med, "rps"), (cpu, "cpu_us"), (wrk_busy, "client_busy")):
                vals = [x[field] for x in runs if x.get(field) is not None]
                table[n][key] = statistics.median(vals) if vals else None

    def mem(n, which):
        r = results.get(n)
        return r[which] if r and which in r else (None, 0, None)

    def one_process(n):
        return n == "lighttpd"

    peers = names[1:]
    w, lw = 14, 34
    rw = [len(f"httpd/{p}") + 3 for p in peers]
    print()
    title = f"throughput, req/s (median of {rounds})"
    print(f"{title:{lw}}" + "".join(f"{n:>{w}}" for n in names)
          + "".join(f"{'httpd/' + p:>{x}}" for p, x in zip(peers, rw)))
    for key, label, _, _ in TESTS:
        h = med["httpd"][key]
        print(f"{'  ' + label:{lw}}" + "".join(f"{fmt(med[n][key]):>{w}}" for n in names)
              + "".join(f"{bench_pool.ratio(h, med[p][key]):>{x}}" for p, x in zip(peers, rw)))
    print(f"{'server CPU per request, µs (median)':{lw}}")
    for key, label, _, _ in TESTS:
        print(f"{'  ' + label:{lw}}" + "".join(f"{fmt(cpu[n][key], 1):>{w}}" for n in names))
    print("Private_Dirty per worker, KiB")
    print(f"{'  idle, before load':{lw}}" + "".join(f"{fmt(mem(n, 'idle')[0]):>{w}}" for n in names))
    print(f"{'  after load':{lw}}" + "".join(f"{fmt(mem(n, 'after')[0]):>{w}}" for n in names))

    def read(n):
        if n not in results:
            return "n/a"
        if one_process(n):
            return "(one process)"
        return f"{mem(n, 'idle')[1]} / {mem(n, 'after')[1]}"
    print(f"{'  workers read (before / after)':{lw}}" + "".join(f"{read(n):>{w}}" for n in names))
    print(f"{'  master process, after load':{lw}}"
          + "".join(f"{'-' if one_process(n) else fmt(mem(n, 'after')[2]):>{w}}" for n in names))

    def warm(n):
        if n not in results:
            return "n/a"
        return "-" if one_process(n) else fmt(results[n]["warm_workers"])
    print(f"{'workers after warm-up':{lw}}" + "".join(f"{warm(n):>{w}}" for n in names))

    # ---- targets (issue 14); they do not decide the exit status
    print()
    print("targets (issue 14):")
    for key, label, _, _ in TESTS:
        h, ng = med["httpd"][key], med["nginx"][key]
        ok = None if h is None or not ng else h >= TARGETS[key] * ng
        print(f"  {label}: httpd/nginx {bench_pool.ratio(h, ng)}, target >= {TARGETS[key]}: {verdict(ok)}")
    h_idle, h_after = mem("httpd", "idle")[0], mem("httpd", "after")[0]
    ok = None if h_idle is None or h_after is None else max(h_idle, h_after) <= MEM_TARGET_KIB
    print(f"  httpd Private_Dirty per worker <= {MEM_TARGET_KIB} KiB idle and after load "
          f"({fmt(h_idle)} / {fmt(h_after)} KiB): {verdict(ok)}")
    print("  from lighttpd (no target), httpd/lighttpd: "
          + "; ".join(f"{label} {bench_pool.ratio(med['httpd'][key], med['lighttpd'][key])}"
                      for key, label, _, _ in TESTS))

    # ---- 1,000 clients
    if c1000:
        print()
        print(f"1,000 kept-alive clients (wrk -t1 -c{C1000} -d{args.duration}s on /{SMALL_NAME}, "
              f"one run each)")
        print(f"{'':{lw - 4}}{'req/s':>9}{'p99 ms':>9}{'avg ms':>9}{'µs/req':>8}{'workers':>9}"
              f"{'busy %':>10}  errors (connect/read/write/timeout; non-2xx)")
        for label, r, note in c1000:
            if r is None:
                print(f"  {label:{lw - 6}}  n/a ({note})")
                continue
            e = r["errors"]
            errors = "/".join(str(e.get(k, 0)) for k in ("connect", "read", "write", "timeout"))
            workers = "-" if r.get("workers") is None else str(r["workers"])
            p99 = "n/a" if r["p99"] is None else f"{r['p99']:.1f}"
            avg = "n/a" if r["lat_avg"] is None else f"{r['lat_avg']:.1f}"
            busy = f"{fmt(r.get('busy'))}/{fmt(r.get('client_busy'))}"
            print(f"  {label:{lw - 6}}{r['rps']:>9,.0f}{p99:>9}{avg:>9}{fmt(r.get('cpu_us'), 1):>8}"
                  f"{workers:>9}{busy:>10}  {errors}; {r['non2xx']}")
        print("  (busy %: the server's core / wrk's core)")

    # ---- notes
    print()
    bound = [f"{n} {label} ({wrk_busy[n][key]:.0f}%)" for n in names for key, label, _, _ in TESTS
             if wrk_busy[n][key] is not None and wrk_busy[n][key] >= WRK_BOUND]
    if bound:
        print(f"note: wrk's core was at least {WRK_BOUND}% busy (median) in: " + "; ".join(bound)
              + ". There wrk, or other work on its core, may be the limit rather than the server"
              + " (the per-run lines show both cores).")
    for n in names:
        r = results.get(n)
        if r and r["problems"]:
            for p in r["problems"]:
                print(f"note: {n}: {p}")
        if n in notes:
            print(f"note: {n}: {notes[n]}")
    code = results.get("httpd", {}).get("exit")
    if code not in (None, 0):
        print(f"note: httpd exited with status {code} after SIGTERM (expected 0)")

    print(f"bench_http: took {args.budget - budget.left():.0f} s (budget {args.budget:.0f} s)")
    httpd_measured = "httpd" in results and all(med["httpd"][k] is not None for k, _, _, _ in TESTS)
    return 0 if httpd_measured else 1


if __name__ == "__main__":
    sys.exit(main())
