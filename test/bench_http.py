#!/usr/bin/env python3
"""bench_http.py - HTTP throughput and worker memory of httpd and two peers.

Run through test/bench.sh, which makes the scratch directory and picks the
binaries. All three servers in the same run, one after the other, each from
a config made here, on a loopback port, serving the same DOCROOT:

  hello.txt   14 bytes ("hello, world!\\n")
  100k.bin    100 KiB

  httpd   --start-servers 5 --min-spare-servers 5 --max-spare-servers 10
          --max-clients 256 (keep-alive timeout 5 s, its default)
  apache  mpm_prefork with the same pool settings; mpm_prefork, authz_core,
          mime and dir only; KeepAlive On, MaxKeepAliveRequests 0
          (unlimited), KeepAliveTimeout 5, EnableSendfile On; no access log
  nginx   worker_processes 1; sendfile on; keepalive_requests 1000000;
          keepalive_timeout 5s; access_log off

The servers (masters and workers) run on one core (taskset -c A), wrk on
another (taskset -c B). All three run at once, each on its own port:

  1. start each in turn; wait until its worker set has been unchanged for
     1.5 s; Private_Dirty of each worker from /proc/PID/smaps_rollup
     ("idle"); check that both files come back whole with 200; warm up:
     short keep-alive wrk runs on the 14-byte file until the worker count
     after a run is no higher than after the one before (bounded in count
     and time);
  2. measure in rounds: in each, every test (keep-alive on the 14-byte
     file, "Connection: close" on the 14-byte file, keep-alive on the
     100 KiB file) on every server, the servers taking turns in an order
     that rotates each round, so a slow spell of this noisy machine falls
     on all of them alike. Each measured run follows an unmeasured one on
     the same test that lets a pool shrunk in the meantime grow back. The
     median over the rounds counts. Socket errors and non-2xx/3xx answers
     are reported, and each run's line shows how busy the server's and
     wrk's cores were (by anything, so other work shows there too);
  3. Private_Dirty of each worker again ("after load"), once wrk has gone.

Per-worker memory is the median over the master's children (nginx: its one
worker). Servers bind 127.0.0.1 only and are stopped by pid; wrk runs under a
timeout and is killed by pid if it overruns. Helpers (process and port
handling, starting and stopping) come from bench_pool.py.
"""

import argparse
import os
import re
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
MEM_TARGET_KIB = 100


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
    """(median Private_Dirty KiB over the workers, worker count, master's KiB)."""
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
    return r


class Wrk:
    def __init__(self, binary, cpu, threads, connections, server_cpu):
        self.binary, self.cpu, self.threads, self.connections = binary, cpu, threads, connections
        self.server_cpu = server_cpu

    def run(self, port, path, close, seconds):
        cmd = [self.binary, f"-t{self.threads}", f"-c{self.connections}", f"-d{seconds}s"]
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
    if r.get("busy") is not None:
        text += f"  cpu busy: server core {r['busy']:.0f}%"
        if r.get("client_busy") is not None:
            text += f", wrk core {r['client_busy']:.0f}%"
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
            log(f"  {server.name:6} {label:24} run {round_no + 1}: {describe(r)}")
            if r["errors"] or r["non2xx"]:
                res["problems"].append(f"{label} run {round_no + 1}: {describe(r).split('!! ')[1]}")


def finish(server, res):
    """Memory after the load (once wrk's connections are gone), a last check, stop."""
    time.sleep(0.3)
    res["after"] = worker_memory(server)
    server.check_serves()


# --------------------------------------------------------------------------
# Report

def fmt(v, digits=0):
    return "n/a" if v is None else f"{v:,.{digits}f}"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--httpd", required=True)
    ap.add_argument("--apache", default="")
    ap.add_argument("--nginx", default="")
    ap.add_argument("--wrk", default="")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured wrk run")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=300, help="seconds for the whole run")
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
    os.chmod(args.workdir, 0o711)   # Apache's and nginx's workers run as www-data / nobody
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

    kinds = [("httpd", Httpd, args.httpd), ("apache", Apache, args.apache), ("nginx", Nginx, args.nginx)]
    notes = {}
    for name, _, binary in kinds:
        if not binary:
            notes[name] = "not installed"
        elif not os.access(binary, os.X_OK):
            notes[name] = f"{binary} is not executable"

    # Fit the repeats into the budget: per server about 15 s of start,
    # warm-up and stop, plus the measured runs.
    repeats = max(1, args.repeats)
    servers = sum(1 for n, _, _ in kinds if n not in notes)
    per_run = args.duration + REWARM_S + 1
    while repeats > 1 and servers * (20 + len(TESTS) * repeats * per_run) > args.budget:
        repeats -= 1
    budget = bench_pool.Budget(args.budget)

    log(f"bench_http: wrk -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{repeats} run(s) per figure (median), {pinning}")
    log(f"  files: /{SMALL_NAME} ({len(SMALL)} B), /{BIG_NAME} ({BIG_SIZE} B); pool: start 5, "
        f"spare 5..10, max 256; keep-alive timeout {KEEPALIVE_TIMEOUT} s")
    for name, _, binary in kinds:
        log(f"  {name:6} {binary or '-'}" + (f"  ({notes[name]})" if name in notes else ""))
    log(f"  wrk    {args.wrk}")
    try:
        load = os.getloadavg()[0]
    except OSError:
        load = None
    if load is not None and load > 0.5:
        log(f"  warning: load average {load:.2f} before the start: other work on these cores "
            f"lowers and scatters the figures")

    results = {}
    servers = []  # started, stopped in the end whatever happens
    rounds = 0
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
            for i in range(repeats):
                if i > 0 and budget.left() < len(servers) * len(TESTS) * per_run + 5:
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
    except KeyboardInterrupt:
        log("interrupted")
        return 130

    # ---- table
    names = [n for n, _, _ in kinds]
    med = {n: {} for n in names}
    for n in names:
        r = results.get(n)
        for key, _, _, _ in TESTS:
            vals = [x["rps"] for x in r["runs"][key]] if r else []
            med[n][key] = statistics.median(vals) if vals else None

    def mem(n, which):
        r = results.get(n)
        return r[which] if r and which in r else (None, 0, None)

    w = 11
    print()
    title = f"throughput, req/s (median of {rounds})"
    print(f"{title:40}" + "".join(f"{n:>{w}}" for n in names)
          + f"{'httpd/apache':>{w + 3}}{'httpd/nginx':>{w + 2}}")
    for key, label, _, _ in TESTS:
        h = med["httpd"][key]
        print(f"{'  ' + label:40}" + "".join(f"{fmt(med[n][key]):>{w}}" for n in names)
              + f"{bench_pool.ratio(h, med['apache'][key]):>{w + 3}}"
              + f"{bench_pool.ratio(h, med['nginx'][key]):>{w + 2}}")
    print(f"{'Private_Dirty per worker, KiB (median)':40}")
    print(f"{'  idle, before load':40}" + "".join(f"{fmt(mem(n, 'idle')[0]):>{w}}" for n in names))
    print(f"{'  after load':40}" + "".join(f"{fmt(mem(n, 'after')[0]):>{w}}" for n in names))
    print(f"{'  workers read (before / after)':40}"
          + "".join(f"{(str(mem(n, 'idle')[1]) + ' / ' + str(mem(n, 'after')[1])) if n in results else 'n/a':>{w}}"
                    for n in names))
    print(f"{'  master process, after load':40}" + "".join(f"{fmt(mem(n, 'after')[2]):>{w}}" for n in names))
    print(f"{'workers after warm-up':40}"
          + "".join(f"{fmt(results[n]['warm_workers']) if n in results else 'n/a':>{w}}" for n in names))
    print("(reference from an earlier setup: apache 17k / 14k / 18k req/s, nginx 54k / 17k / 30k; "
          "Private_Dirty apache 232 KiB, nginx 684 KiB)")

    # ---- targets
    verdicts = []
    for key, label, _, _ in TESTS:
        h, ng = med["httpd"][key], med["nginx"][key]
        v = "n/a" if h is None or ng is None else ("PASS" if h >= ng else "FAIL")
        verdicts.append(f"{label} {v}")
    print("target httpd >= nginx req/s: " + "; ".join(verdicts))
    h_idle, h_after = mem("httpd", "idle")[0], mem("httpd", "after")[0]
    worst = max([v for v in (h_idle, h_after) if v is not None], default=None)
    v = "n/a" if worst is None else ("PASS" if worst <= MEM_TARGET_KIB else "FAIL")
    print(f"target httpd Private_Dirty per idle worker <= {MEM_TARGET_KIB} KiB "
          f"(idle before load / idle after load): {v} ({fmt(h_idle)} / {fmt(h_after)} KiB)")
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

    httpd_measured = "httpd" in results and all(med["httpd"][k] is not None for k, _, _, _ in TESTS)
    return 0 if httpd_measured else 1


if __name__ == "__main__":
    sys.exit(main())
