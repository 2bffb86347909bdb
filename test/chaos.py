#!/usr/bin/env python3
"""chaos.py - httpd under fire: killed workers, restart storms, draining,
slow clients, leaks, crashing handlers, stops and upgrades behind a load
balancer. Run through test/chaos.sh (`make chaos`); --only a,b (CHAOS_ONLY)
runs some of the scenarios.

Every scenario starts a fresh httpd on a loopback port, drives it, prints
its figures and a PASS or FAIL line; the run ends with "N passed, M failed".
Every wait polls with a deadline and every load is bounded in time, so the
whole run stays well under ten minutes. Servers are stopped by pid.

  massacre  20 s of wrk load while a random worker is SIGKILLed every
            100 ms: failed requests (socket errors + non-2xx) <= kills;
            afterwards the pool is back within min/max spare and answers.
  restarts  20 s of wrk load with a graceful restart (SIGHUP) every 500 ms:
            no failed request; 2 s after the last one, no worker of an
            older generation is left.
  drain     SIGTERM while 20 downloads of a 32 MiB file are in flight: all
            complete byte-exact, the master exits 0, and the System V IPC
            objects are as before (ipcs).
  slowloris 500 connections from 127.0.0.2 that send a header byte a second
            while a client on 127.0.0.1 keeps requesting: its p99 < 1 s and
            none of its requests fails (--max-clients-per-ip 32,
            --request-timeout 5, and httpd's TCP_DEFER_ACCEPT).
  hung      a handler that never returns (chaos_server /hang) is killed after
            --timeout 1 (SIGTERM, then SIGKILL after the 2 s grace); its
            client sees the connection close, others are served meanwhile.
  crashloop an init hook that fails in every worker: the back-off grows
            (fork rate falls), the pool recovers once the hook succeeds;
            with shutdown_on_error the server stops instead.
  nproc     (root) the server as nobody under RLIMIT_NPROC 4: 3 workers,
            it serves, fork failures logged without a tight loop; the pool
            reaches 5 once the limit is raised.
  leaks     one worker serves 100k keep-alive and 20k new-connection
            requests: its RSS stays within 64 KiB of the value after the
            warm-up and its open-fd count does not change; then valgrind
            memcheck on httpd --single-process serving every kind of answer:
            no definite leak, no invalid access.
  privilege (root) httpd --user nobody: master and workers have nobody's
            uid, gid and groups in /proc/PID/status; without --user, as
            root, httpd runs as www-data (else nobody) and says so.
  upgrade   20 s of wrk load (keep-alive, and Connection: close) with a
            binary upgrade (SIGUSR2) every 2 s, a fresh copy of httpd
            installed at its path each time: no failed request, every old
            master exits 0, every new one runs the file now on disk, and one
            master is left that serves.

The three slowhttptest attacks run for ATTACK_S (30 s) against httpd with
its defaults, then against nginx (one worker, its default timeouts, the same
docroot) for comparison; all on 127.0.0.1, and meanwhile a client there
starts a GET of the small file on a new connection every 50 ms (5 s
timeout). httpd passes when >= 99 % of those are answered 200 and their p99
is under 1 s; nginx is only reported, and so is slowhttptest's own view
(its probe's "service available" each second, how it ended, of its first
wave). slowhttptest never reopens a closed connection and gives up when
none is left, so whenever a wave ends early a fresh one starts: the
attack lasts the whole ATTACK_S.
  slowheaders slowhttptest -H: 800 connections (200 a second) that send
            their request head slowly (a header line every 10 s).
  slowbody  slowhttptest -B: 600 POSTs announcing 8 KiB that send their
            body slowly (httpd reads a body before it answers; a POST to a
            file is then a 405).
  slowread  slowhttptest -X: 800 connections, 3 pipelined GETs each of a
            1 MiB file (more than the socket buffers hold), reading 32 bytes
            every 5 s through a 512..1024-byte window.
  slowlink  a real client on a slow link, no pressure: curl uploads 100 KiB
            at 2 KiB/s (about 50 s) to chaos_server's POST /upload, which
            must get all of it.

  crashstorm chaos_server's /crash (SIGSEGV in a handler) 30 times in a row,
            then 20 ordinary requests: all 200, the first within 1 s; the log
            names a crash's request line ("GET /crash HTTP/1.1"), logs a
            storm at a bounded rate, and says nothing of a back-off.
  throw     chaos_server's /throw (a handler throws) 10 times: each answered
            500, no worker died (same pids), the log names the route and
            the exception's what().
  stopping  chaos_server with 2 workers (--max-clients 2) both in a 2 s
            /sleep and 5 requests in the listen queue, then SIGTERM: a new
            connect() is refused within 100 ms, the 2 sleeps and the 5
            queued requests are answered 200 (none reset), exit 0.
  exporter  Prometheus' apache_exporter (Debian's prometheus-apache-exporter)
            scraping httpd's /server-status?auto: within 10 s its /metrics
            has apache_up 1, apache_version 0.01 (its reading of httpd's
            ServerVersion prefork-httpd/0.1.0: major + minor/100 + ...),
            apache_accesses_total, apache_workers and apache_scoreboard, and
            it is still running (it panicked on a ServerVersion that was not
            Product/X.Y.Z).
  balancer  haproxy (health checks every 200 ms, redispatch, 3 retries) in
            front of two httpds under wrk load (2 threads, 16 connections):
            stop and start each in turn, waiting for haproxy to see it UP,
            then a binary upgrade (SIGUSR2) of each in turn: no failed
            request (socket errors + non-2xx). Prints haproxy's config and,
            per step, its error, retry and redispatch counters.
"""

import argparse
import ctypes
import os
import random
import re
import select
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_pool  # noqa: E402  (servers, /proc helpers)
from bench_http import parse_wrk  # noqa: E402
from bench_pool import Skip, children_of, now  # noqa: E402

SMALL = b"hello, chaos!\n"
BIG_SIZE = 32 * 1024 * 1024
POOL = ["--start-servers", "5", "--min-spare-servers", "5", "--max-spare-servers", "10"]
MIB_NAME = "1m.bin"      # slowread's file: its answers do not fit in the socket buffers
MIB_SIZE = 1024 * 1024
# Length of each slowhttptest attack (slowheaders, slowbody, slowread), in
# seconds; CHAOS_ATTACK_S shortens it while developing.
ATTACK_S = int(os.environ.get("CHAOS_ATTACK_S", "30"))


class Httpd(bench_pool.Server):
    name = "httpd"

    def __init__(self, binary, workdir, tag, args):
        super().__init__(binary, workdir, tag)
        self.args = args

    def command(self, settings):
        user = ["--user", "nobody"] if os.geteuid() == 0 else []
        return [self.binary] + user + ["--listen", f"127.0.0.1:{self.port}"] + self.args + \
            [os.path.join(self.workdir, "www")]


def recv_all(s):
    """What the socket s sends until it closes (its timeout applies)."""
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return data
        data += chunk


def request(port, path="/hello.txt", source=None, timeout=5.0):
    """One GET on a new connection: (status, body), status 0 on failure."""
    try:
        s = socket.socket()
        s.settimeout(timeout)
        if source:
            s.bind((source, 0))
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = recv_all(s)
        s.close()
    except OSError:
        return 0, b""
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3})", head)
    return (int(m.group(1)) if m else 0), body


def status_auto(port):
    """The ?auto status page as a dict, or {}."""
    code, body = request(port, "/server-status?auto")
    if code != 200:
        return {}
    out = {}
    for line in body.decode("latin-1").splitlines():
        k, _, v = line.partition(": ")
        out[k] = v
    return out


def eventually(pred, deadline_s, step=0.05):
    end = now() + deadline_s
    while now() < end:
        if pred():
            return True
        time.sleep(step)
    return pred()


class Wrk:
    def __init__(self, binary):
        self.binary = binary

    def start(self, port, seconds, connections=16, close=False, path="/hello.txt"):
        cmd = [self.binary, "-t1", f"-c{connections}", f"-d{seconds}s", "--latency"]
        if close:
            cmd += ["-H", "Connection: close"]
        cmd.append(f"http://127.0.0.1:{port}{path}")
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    @staticmethod
    def finish(proc, seconds):
        try:
            out, _ = proc.communicate(timeout=seconds + 15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        r = parse_wrk(out)
        r["requests"] = r["requests"] or 0
        r["rps"] = r["rps"] or 0.0
        r["failed"] = sum(r["errors"].values()) + r["non2xx"]
        return r


def describe(r):
    errs = ", ".join(f"{k} {v}" for k, v in r["errors"].items()) or "none"
    return f"{r['requests']} requests, {r['rps']:.0f} req/s, socket errors: {errs}, non-2xx: {r['non2xx']}"


# --------------------------------------------------------------------------
# Scenarios: each returns (passed, one line of figures)

def massacre(ctx):
    srv = ctx.start("massacre", POOL + ["--max-clients", "64"])
    w = ctx.wrk.start(srv.port, 20)
    kills, end = 0, now() + 20
    rng = random.Random(1)
    while now() < end and w.poll() is None:
        kids = children_of(srv.proc.pid) or []
        if kids:
            try:
                os.kill(rng.choice(kids), signal.SIGKILL)
                kills += 1
            except OSError:
                pass
        time.sleep(0.1)
    r = Wrk.finish(w, 20)
    idle = {}

    def settled():
        idle.update(status_auto(srv.port))
        return idle.get("IdleWorkers", "").isdigit() and 5 <= int(idle["IdleWorkers"]) <= 10
    back = eventually(settled, 10)
    answers = request(srv.port)[0] == 200
    ok = r["requests"] > 0 and r["failed"] <= kills and back and answers
    return ok, (f"{kills} kills; {describe(r)}; failed {r['failed']} <= kills: {r['failed'] <= kills}; "
                f"idle workers afterwards {idle.get('IdleWorkers', '?')} (spare 5..10), answers: {answers}")


def restarts(ctx):
    srv = ctx.start("restarts", POOL)
    w = ctx.wrk.start(srv.port, 20)
    hups, end = 0, now() + 19.5
    last = now()
    while now() < end and w.poll() is None:
        os.kill(srv.proc.pid, signal.SIGHUP)
        hups += 1
        last = now()
        time.sleep(0.5)
    r = Wrk.finish(w, 20)
    time.sleep(max(0.0, last + 2 - now()))
    code, body = request(srv.port, "/server-status?json")
    text = body.decode("latin-1")
    gen = re.search(r'"generation":(\d+)', text)
    gens = [int(g) for g in re.findall(r'"pid":\d+,"state":"[^"]*","generation":(\d+)', text)]
    old = [g for g in gens if gen and g != int(gen.group(1))]
    ok = code == 200 and r["requests"] > 0 and r["failed"] == 0 and not old and gens
    return ok, (f"{hups} restarts; {describe(r)}; generation {gen.group(1) if gen else '?'}; "
                f"old-generation workers 2 s after the last restart: {len(old)}")


def ipc_ids():
    out = subprocess.run(["ipcs"], capture_output=True, text=True).stdout
    return sorted(re.findall(r"^0x[0-9a-f]+\s+(\d+)", out, re.M))


def drain(ctx):
    before = ipc_ids()
    srv = ctx.start("drain", POOL)
    outs = [os.path.join(ctx.workdir, f"dl{i}") for i in range(20)]
    curls = [subprocess.Popen(["curl", "-sS", "--limit-rate", "12M", "-o", o,
                               f"http://127.0.0.1:{srv.port}/big.bin"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for o in outs]
    # SIGTERM once every download has begun.
    eventually(lambda: all(os.path.exists(o) and os.path.getsize(o) > 0 for o in outs), 10)
    t0 = now()
    os.kill(srv.proc.pid, signal.SIGTERM)
    codes = []
    for c in curls:
        try:
            codes.append(c.wait(60))
        except subprocess.TimeoutExpired:
            c.kill()
            codes.append(-1)
    try:
        master = srv.proc.wait(40)
    except subprocess.TimeoutExpired:
        master = None
    took = now() - t0
    srv.stop()
    with open(os.path.join(ctx.workdir, "www", "big.bin"), "rb") as f:
        want = f.read()
    exact = 0
    for o in outs:
        try:
            with open(o, "rb") as f:
                exact += f.read() == want
        except OSError:
            pass
        try:
            os.unlink(o)
        except OSError:
            pass
    after = ipc_ids()
    ok = exact == 20 and all(c == 0 for c in codes) and master == 0 and before == after
    return ok, (f"{exact}/20 downloads byte-exact (curl exit codes {sorted(set(codes))}); master exit "
                f"{master} {took:.1f} s after SIGTERM; IPC objects before {len(before)}, after {len(after)}"
                f"{'' if before == after else ' (differ)'}")


def slowloris(ctx):
    srv = ctx.start("slowloris", POOL + ["--max-clients", "256", "--max-clients-per-ip", "32",
                                         "--request-timeout", "5"])
    stop = threading.Event()
    stats = {"connects": 0, "bytes": 0}
    head = b"GET /hello.txt HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 4096

    def loris():
        socks = {}  # socket -> bytes of the head sent

        def opened():
            try:
                s = socket.socket()
                s.setblocking(False)
                s.bind(("127.0.0.2", 0))
                s.connect_ex(("127.0.0.1", srv.port))
                stats["connects"] += 1
                return s
            except OSError:
                return None
        while not stop.is_set():
            while len(socks) < 500:
                s = opened()
                if s is None:
                    break
                socks[s] = 0
            for s in list(socks):
                try:
                    s.send(head[socks[s]:socks[s] + 1])
                    socks[s] += 1
                    stats["bytes"] += 1
                    # Whatever the server says (408, 503) ends this one; drop it.
                    r, _, _ = select.select([s], [], [], 0)
                    if r and not s.recv(4096, socket.MSG_DONTWAIT):
                        raise OSError
                except (OSError, BlockingIOError):
                    s.close()
                    del socks[s]
            stop.wait(1.0)
        for s in socks:
            s.close()

    t = threading.Thread(target=loris, daemon=True)
    t.start()
    time.sleep(2)  # let the slow clients take what they can
    lat, failed, end = [], 0, now() + 20
    while now() < end:
        t0 = now()
        code, body = request(srv.port, timeout=5)
        lat.append(now() - t0)
        failed += code != 200 or body != SMALL
        time.sleep(0.02)
    stop.set()
    t.join(10)
    lat.sort()
    p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] if lat else None
    ok = lat and p99 < 1.0 and failed == 0
    return ok, (f"{len(lat)} requests from 127.0.0.1, failed {failed}, latency median "
                f"{statistics.median(lat) * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms; slow side "
                f"{stats['connects']} connects, {stats['bytes']} bytes trickled")


class ChaosServer(bench_pool.Server):
    """build/chaos_server: httpd's service plus /hang and --fail-while FILE.
    `wrap` goes before the command (prlimit, setpriv)."""
    name = "chaos_server"

    def __init__(self, binary, workdir, tag, args, wrap=()):
        super().__init__(binary, workdir, tag)
        self.args, self.wrap = args, list(wrap)

    def command(self, settings):
        return self.wrap + [self.binary, "--listen", f"127.0.0.1:{self.port}"] + self.args + \
            [os.path.join(self.workdir, "www")]


def log_lines(srv, needle):
    try:
        with open(srv.log_path, errors="replace") as f:
            return [line for line in f if needle in line]
    except OSError:
        return []


def hung(ctx):
    srv = ctx.start_chaos("hung", POOL + ["--timeout", "1"])
    result = {}

    def hang():
        t0 = now()
        result["status"], _ = request(srv.port, "/hang", timeout=15)  # 0: closed without an answer
        result["after"] = now() - t0
    t = threading.Thread(target=hang)
    t.start()
    others = failed = 0
    while t.is_alive():  # meanwhile, others are served
        code, _ = request(srv.port, timeout=5)
        others += 1
        failed += code != 200
        time.sleep(0.05)
    t.join()
    killed = log_lines(srv, "SIGTERM") + log_lines(srv, "SIGKILL")
    back = eventually(lambda: len(children_of(srv.proc.pid) or []) >= 5, 10)
    closed_after = result.get("after", 99)
    ok = result.get("status") == 0 and closed_after < 1 + 2 + 2 and others > 10 and failed == 0 and back and killed
    return ok, (f"/hang closed without an answer after {closed_after:.1f} s (timeout 1 s + kill grace 2 s); "
                f"{others} other requests meanwhile, failed {failed}; watchdog log lines {len(killed)}; "
                f"pool back to 5: {back}")


def spawn(ctx, tag, args):
    """chaos_server started directly (its workers may never come up):
    (process, port, log path). Its own session: stop() ends it by pid."""
    port = bench_pool.free_port()
    log = os.path.join(ctx.workdir, f"{tag}.log")
    with open(log, "wb") as out:
        p = subprocess.Popen([ctx.chaos_server, "--listen", f"127.0.0.1:{port}"] + args +
                             [os.path.join(ctx.workdir, "www")], stdout=out, stderr=subprocess.STDOUT,
                             cwd=ctx.workdir, start_new_session=True)
    return p, port, log


def stop(p, wait_s=10):
    """SIGTERM, then SIGKILL after wait_s; the exit code."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(wait_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    return p.returncode


def crash_loop(ctx):
    flag = os.path.join(ctx.workdir, "fail-now")
    open(flag, "w").close()
    p, port, log = spawn(ctx, "crashloop", POOL + ["--fail-while", flag])
    time.sleep(8)
    text = open(log, errors="replace").read()
    delays = [int(d) for d in re.findall(r"next fork in (\d+) ms", text)]
    os.unlink(flag)
    t0 = now()
    recovered = eventually(lambda: request(port, timeout=1)[0] == 200, 15, 0.1)
    recovery = now() - t0
    cleared = "back-off cleared" in open(log, errors="replace").read() or \
        eventually(lambda: "back-off cleared" in open(log, errors="replace").read(), 3)
    stop(p)
    # With shutdown_on_error the same failure stops the server instead.
    open(flag, "w").close()
    p, port, log = spawn(ctx, "crashloop-stop", POOL + ["--fail-while", flag, "--shutdown-on-error"])
    try:
        code = p.wait(10)
    except subprocess.TimeoutExpired:
        code = None
    stop(p)
    os.unlink(flag)
    said = "shutdown_on_error" in open(log, errors="replace").read()
    growing = len(delays) >= 4 and all(b >= a for a, b in zip(delays, delays[1:])) and delays[-1] >= 1600
    ok = growing and len(delays) < 40 and recovered and cleared and code not in (0, None) and said
    return ok, (f"{len(delays)} failed workers in 8 s, back-off delays {delays} ms (the fork rate falls); "
                f"recovered {recovery:.1f} s after the hook succeeded again (back-off cleared: {cleared}); "
                f"with shutdown_on_error: exit {code}, log names it: {said}")


AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


def fork_failure(ctx):
    if os.geteuid() != 0:
        return None, "skipped: RLIMIT_NPROC binds only a non-root server, and this run is not root"
    # As nobody, with at most 4 processes (soft limit): the master and 3 of
    # the 5 workers.
    srv = ChaosServer(ctx.chaos_server, ctx.workdir, "nproc", POOL,
                      wrap=["prlimit", "--nproc=4:64"] + AS_NOBODY)
    ctx.servers.append(srv)
    srv.start({})
    serves = eventually(lambda: request(srv.port, timeout=1)[0] == 200, 10)
    time.sleep(3)
    workers = len(children_of(srv.proc.pid) or [])
    t0 = now()
    before = len(log_lines(srv, "fork: "))
    time.sleep(3)
    tries = len(log_lines(srv, "fork: ")) - before
    rate = tries / (now() - t0)
    # Raised by nobody itself (soft limit up to the hard one): no capability needed.
    subprocess.run(AS_NOBODY + ["prlimit", f"--pid={srv.proc.pid}", "--nproc=64:64"], check=False)
    grew = eventually(lambda: len(children_of(srv.proc.pid) or []) >= 5, 15)
    said = log_lines(srv, "fork: ")
    ok = serves and workers == 3 and rate < 5 and grew and said and "Resource temporarily unavailable" in said[0]
    return ok, (f"limit 4 processes: {workers} workers, serves: {serves}; fork attempts logged at "
                f"{rate:.1f}/s (no tight loop); first says: {said[0].strip()[-70:] if said else '-'}; "
                f"after the limit was raised to 64: 5 workers {'reached' if grew else 'NOT reached'}")


def privilege(ctx):
    if os.geteuid() != 0:
        return None, "skipped: needs root"
    import pwd
    nobody = pwd.getpwnam("nobody")
    groups = sorted(set(os.getgrouplist("nobody", nobody.pw_gid)))
    srv = ctx.start("privilege", POOL)  # as root, Context.start passes --user nobody
    procs = [srv.proc.pid] + (children_of(srv.proc.pid) or [])
    wrong = []
    for pid in procs:
        with open(f"/proc/{pid}/status") as f:
            st = f.read()
        ids = lambda key: re.search(rf"^{key}:\s+(.*)$", st, re.M).group(1).split()
        if ids("Uid") != [str(nobody.pw_uid)] * 4 or ids("Gid") != [str(nobody.pw_gid)] * 4 or \
                sorted(int(g) for g in ids("Groups")) != groups:
            wrong.append(pid)
    serves = request(srv.port)[0] == 200
    srv.stop()
    default_ok, said = runs_as_default_user(ctx)
    ok = not wrong and len(procs) >= 6 and serves and default_ok
    return ok, (f"{len(procs)} processes (master + workers) all uid/gid {nobody.pw_uid}/{nobody.pw_gid} with "
                f"groups {groups}: {not wrong}; serves: {serves}; without --user: {said}")


def runs_as_default_user(ctx):
    """Root without --user: httpd runs as www-data (else nobody) and says so."""
    import pwd
    try:
        account = pwd.getpwnam("www-data")
    except KeyError:
        account = pwd.getpwnam("nobody")
    port = bench_pool.free_port()
    proc = subprocess.Popen([ctx.httpd, "--listen", f"127.0.0.1:{port}", os.path.join(ctx.workdir, "www")],
                            stderr=subprocess.PIPE, text=True)
    try:
        up = eventually(lambda: request(port)[0] == 200, 10)
        with open(f"/proc/{proc.pid}/status") as f:
            uids = re.search(r"^Uid:\s+(.*)$", f.read(), re.M).group(1).split()
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    said = [l for l in err.splitlines() if "without --user" in l]
    ok = up and uids == [str(account.pw_uid)] * 4 and said and account.pw_name in said[0]
    return ok, f"serves: {up}, uids {' '.join(uids)}, says \"{said[0].split('] ')[-1] if said else '-'}\""


def rss_and_fds(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def run_until(ctx, port, count, close):
    """wrk on one connection until about `count` requests are done (bounded)."""
    done = 0
    end = now() + 60
    while done < count and now() < end:
        r = Wrk.finish(ctx.wrk.start(port, 2, connections=1, close=close), 2)
        if r["requests"] == 0:
            break
        done += r["requests"]
    return done


def leaks(ctx):
    srv = ctx.start("leaks", ["--start-servers", "1", "--min-spare-servers", "1",
                              "--max-spare-servers", "1", "--max-clients", "1"])
    worker = children_of(srv.proc.pid)[0]
    run_until(ctx, srv.port, 10000, False)          # warm-up
    run_until(ctx, srv.port, 2000, True)
    rss0, fds0 = rss_and_fds(worker)
    ka = run_until(ctx, srv.port, 100000, False)
    nc = run_until(ctx, srv.port, 20000, True)
    same = children_of(srv.proc.pid) == [worker]
    rss1, fds1 = rss_and_fds(worker)
    srv.stop()
    flat = abs(rss1 - rss0) <= 64 and fds1 == fds0 and same and ka >= 100000 and nc >= 20000

    # valgrind: one process serving every kind of answer.
    vg_log = os.path.join(ctx.workdir, "valgrind.log")
    port = bench_pool.free_port()
    user = ["--user", "root"] if os.geteuid() == 0 else []
    vg = subprocess.Popen(["valgrind", "--leak-check=full", "--show-leak-kinds=definite",
                           f"--log-file={vg_log}", ctx.httpd] + user +
                          ["--single-process", "--listen", f"127.0.0.1:{port}",
                           os.path.join(ctx.workdir, "www")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    served = eventually(lambda: request(port, timeout=1)[0] == 200, 30, 0.2)
    kinds = ["/hello.txt", "/missing", "/server-status?auto", "/server-status?json", "/server-status",
             "/%2e%2e/etc/passwd", "/big.bin"]
    for path in kinds * 5:
        request(port, path, timeout=10)
    for raw in (b"BAD\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n", b"POST / HTTP/1.1\r\nHost: x\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(raw)
                s.recv(4096)
        except OSError:
            pass
    stop(vg, 60)  # valgrind's leak check takes a while
    text = open(vg_log, errors="replace").read() if os.path.exists(vg_log) else ""
    m_def = re.search(r"definitely lost: ([\d,]+) bytes", text)
    definite = int(m_def.group(1).replace(",", "")) if m_def else 0
    m_err = re.search(r"ERROR SUMMARY: ([\d,]+) errors", text)
    errors = int(m_err.group(1).replace(",", "")) if m_err else None
    clean = served and errors == 0 and definite == 0
    ok = flat and clean
    return ok, (f"one worker, {ka} keep-alive + {nc} new-connection requests: RSS {rss0} -> {rss1} KiB "
                f"({rss1 - rss0:+d}), open fds {fds0} -> {fds1}, same worker: {same}; valgrind: "
                f"served {served}, definitely lost {definite} bytes, error summary {errors}")


def install(source, path):
    """Copies source to path as a new file (a new inode, as a package
    install does): the running binary is never written over."""
    with open(source, "rb") as f:
        data = f.read()
    with open(path + ".new", "wb") as f:
        f.write(data)
    os.chmod(path + ".new", 0o755)
    os.rename(path + ".new", path)


def pid_in(path):
    try:
        with open(path) as f:
            return int(f.read().strip() or 0)
    except (OSError, ValueError):
        return 0


def wait_pid(pid, seconds):
    """The exit code of our child pid (a subreaper's adopted one too), or None."""
    end = now() + seconds
    while now() < end:
        try:
            done, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:  # not ours (yet): its parent lives
            done, status = 0, 0
        if done == pid:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.02)
    return None


def upgrade(ctx):
    libc = ctypes.CDLL(None, use_errno=True)
    # PR_SET_CHILD_SUBREAPER: a new master becomes our child once the old
    # one has exited, so we can wait for it and stop it by pid.
    libc.prctl(36, 1)
    binary = os.path.join(ctx.workdir, "httpd-upgrading")
    install(ctx.httpd, binary)
    # The new masters run as the user the first one became: the pid file
    # lives where that user may write (systemd: RuntimeDirectory=).
    run_dir = os.path.join(ctx.workdir, "run")
    os.makedirs(run_dir, exist_ok=True)
    if os.geteuid() == 0:
        import pwd
        nobody = pwd.getpwnam("nobody")
        os.chown(run_dir, nobody.pw_uid, nobody.pw_gid)
    pid_file = os.path.join(run_dir, "httpd.pid")
    srv = ctx.start_binary(binary, "upgrade", POOL + ["--pid-file", pid_file])
    masters, exits, wrong_exe, stuck, code = [srv.proc.pid], [], [], 0, None
    try:
        keep = ctx.wrk.start(srv.port, 20)
        closing = ctx.wrk.start(srv.port, 20, connections=4, close=True)
        end = now() + 18
        time.sleep(1)
        while now() < end and keep.poll() is None:
            started = now()
            install(ctx.httpd, binary)
            old = masters[-1]
            os.kill(old, signal.SIGUSR2)
            if not eventually(lambda: pid_in(pid_file) not in (0, old), 10):
                stuck += 1
                break
            new = pid_in(pid_file)
            masters.append(new)
            if os.readlink(f"/proc/{new}/exe") != binary:
                wrong_exe.append(new)
            if old == srv.proc.pid:
                try:
                    exits.append(srv.proc.wait(10))
                except subprocess.TimeoutExpired:
                    exits.append(None)
            else:
                exits.append(wait_pid(old, 10))
            time.sleep(max(0.0, started + 2 - now()))
        r = [Wrk.finish(keep, 20), Wrk.finish(closing, 20)]
        answers = request(srv.port)[0] == 200
        alive = [pid for pid in masters if os.path.exists(f"/proc/{pid}") and pid != masters[-1]]
    finally:
        last = masters[-1]
        if last != srv.proc.pid:
            os.kill(last, signal.SIGTERM)
            code = wait_pid(last, 10)
            if code is None:
                os.kill(last, signal.SIGKILL)
                wait_pid(last, 5)
        libc.prctl(36, 0)
    upgrades = len(masters) - 1
    failed = r[0]["failed"] + r[1]["failed"]
    ok = (upgrades >= 5 and not stuck and failed == 0 and all(e == 0 for e in exits) and
          not wrong_exe and not alive and answers and code == 0)
    return ok, (f"{upgrades} upgrades; keep-alive: {describe(r[0])}; close: {describe(r[1])}; "
                f"old masters' exit codes {sorted(set(exits))}; new masters not on the new file: "
                f"{len(wrong_exe)}; old masters still alive: {len(alive)}; answers: {answers}; "
                f"last master stopped with {code}")


# --------------------------------------------------------------------------
# Slow clients from slowhttptest, against httpd's defaults and, for
# comparison, nginx; a well-behaved client on the same address meanwhile.

class Nginx(bench_pool.Nginx):
    """nginx, one worker, near its defaults (header, body and send timeouts
    60 s, keep-alive 75 s), serving the same docroot."""

    def directives(self):
        return """    sendfile on;
    types { text/plain txt; application/octet-stream bin; }
    default_type application/octet-stream;
"""


ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def attack_summary(base):
    """What slowhttptest made of its run: its last status block and exit
    line (from base.out) and its per-second CSV (base.csv)."""
    try:
        with open(base + ".out", errors="replace") as f:
            text = ANSI.sub("", f.read())
    except OSError:
        text = ""
    last = lambda key: (re.findall(rf"^{key}:\s+(\S+)", text, re.M) or ["?"])[-1]
    s = {k: last(k) for k in ("connected", "pending", "closed", "error", "service available")}
    exit_line = re.findall(r"^Exit status:\s*(.+?)\s*$", text, re.M)
    ended = re.findall(r"Test ended on (\d+)th second", text)
    s["exit"] = exit_line[-1] if exit_line else None
    s["ended"] = int(ended[-1]) if ended else None
    rows = []
    try:
        with open(base + ".csv") as f:
            next(f)
            rows = [[int(x) for x in line.split(",")] for line in f if line.strip()]
    except (OSError, StopIteration, ValueError):
        pass
    # Seconds,Closed,Pending,Connected,Service Available (non-zero: yes),
    # a row a second: its last row is the end (the text has every 5th s).
    if rows:
        s["closed"], s["pending"], s["connected"] = rows[-1][1:4]
    s["max_connected"] = max((r[3] for r in rows), default=0)
    s["seconds"] = len(rows)
    s["available"] = sum(1 for r in rows if r[4] > 0)
    return s


def under_attack(ctx, srv, tag, flags, path):
    """slowhttptest `flags` against srv for ATTACK_S while a client on
    127.0.0.1 starts a GET /hello.txt on a new connection every 50 ms (5 s
    timeout) until the attack ends. Open loop: a request does not wait for
    the one before, so a stall counts every request that arrived during it.
    slowhttptest never reopens a connection the server closed, and stops
    when none is left: a server that sheds its slow clients would see the
    attack end early, so a fresh wave is started each time, and the attack
    lasts ATTACK_S whatever the server does.
    (answered 200, requests, sorted latencies, slowhttptest's summary of
    its first wave with "waves" added)"""
    base = os.path.join(ctx.workdir, f"{tag}-{srv.name}")
    results, lock = [], threading.Lock()

    def one():
        t0 = now()
        code, body = request(srv.port, timeout=5)
        took = now() - t0  # request()'s timeout is per call: 5 s is the whole budget here
        with lock:
            results.append((took, code == 200 and body == SMALL and took <= 5))

    def wave(n, seconds):
        out_base = base if n == 1 else f"{base}-wave{n}"
        cmd = [ctx.slowhttptest] + flags + ["-l", str(max(1, int(seconds))), "-g", "-o", out_base,
                                            "-u", f"http://127.0.0.1:{srv.port}{path}"]
        with open(out_base + ".out", "wb") as out:
            return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=ctx.workdir, start_new_session=True)
    clients = []
    start = now()
    until = start + ATTACK_S
    waves = 1
    attack = wave(1, ATTACK_S)
    end = until + 20  # each wave stops itself at -l; this bounds a stuck one
    try:
        while now() < end:
            if attack.poll() is not None:  # this wave is over
                if until - now() < 2:
                    break
                waves += 1
                attack = wave(waves, until - now())
            t = threading.Thread(target=one, daemon=True)
            t.start()
            clients.append(t)
            time.sleep(max(0.0, start + len(clients) * 0.05 - now()))
    finally:
        lasted = now() - start
        stop(attack, 5)
        deadline = now() + 12
        for t in clients:  # each ends within its timeouts
            t.join(max(0.0, deadline - now()))
    with lock:
        done = list(results)
    lat = sorted([r[0] for r in done] + [float("inf")] * (len(clients) - len(done)))
    summary = attack_summary(base)
    summary["waves"] = waves
    summary["lasted"] = lasted
    return sum(r[1] for r in done), len(clients), lat, summary


def slow_attack(ctx, tag, flags, path):
    """under_attack() against httpd (defaults), then nginx; httpd must keep
    >= 99 % of the client's requests answered and its p99 under 1 s."""
    if not ctx.slowhttptest:
        return None, "skipped: no slowhttptest"
    lines, verdict = [], False
    for name in ("httpd", "nginx"):
        if name == "nginx" and not ctx.nginx:
            lines.append("nginx n/a (not installed)")
            continue
        try:
            srv = ctx.start(tag, []) if name == "httpd" else ctx.started(Nginx(ctx.nginx, ctx.workdir, tag))
        except Skip as e:
            if name == "httpd":
                raise
            lines.append(f"nginx n/a ({e})")
            continue
        try:
            good, n, lat, s = under_attack(ctx, srv, tag, flags, path)
        finally:
            srv.stop()
        rate = good / n if n else 0.0
        p99 = lat[min(n - 1, int(n * 0.99))] if n else float("inf")
        ran = s["max_connected"] > 0 and s["exit"] is not None
        if name == "httpd":
            verdict = ran and n >= 10 and rate >= 0.99 and p99 < 1.0
        lines.append(
            f"{name}: client {good}/{n} answered 200 ({rate * 100:.1f} %), latency median "
            f"{(statistics.median(lat) if lat else 0) * 1000:.1f} ms, p99 {p99 * 1000:.0f} ms, max "
            f"{(lat[-1] if lat else 0) * 1000:.0f} ms; slowhttptest: up to {s['max_connected']} connected, "
            f"at its end {s['connected']} connected / {s['pending']} pending / {s['closed']} closed / "
            f"{s['error']} error, service available {s['available']} of {s['seconds']} s (last: "
            f"{s['service available']}), \"{s['exit'] or 'did not finish'}\" on second {s['ended']}; "
            f"{s['waves']} wave(s) of {flags[flags.index('-c') + 1]} connections in {s['lasted']:.0f} s")
    return verdict, "; ".join(lines)


def slowheaders(ctx):
    return slow_attack(ctx, "slowheaders", ["-c", "800", "-H", "-i", "10", "-r", "200", "-t", "GET",
                                            "-x", "24", "-p", "3"], "/hello.txt")


def slowbody(ctx):
    return slow_attack(ctx, "slowbody", ["-c", "600", "-B", "-i", "10", "-r", "200", "-s", "8192",
                                         "-t", "POST", "-x", "10", "-p", "3"], "/hello.txt")


def slowread(ctx):
    return slow_attack(ctx, "slowread", ["-c", "800", "-X", "-r", "200", "-w", "512", "-y", "1024",
                                         "-n", "5", "-z", "32", "-k", "3", "-p", "3"], "/" + MIB_NAME)


# --------------------------------------------------------------------------
# Handlers that crash or throw, and a graceful stop with a full listen queue

NO_CORE = ["prlimit", "--core=0"]  # 30 crashes, no 30 core files


def crash_lines(srv):
    """(crash lines, crashes they account for): one line per crash logged
    one by one, plus the storm summaries' "N more workers died"."""
    lines = log_lines(srv, "while serving")
    more = sum(int(m.group(1)) for m in (re.search(r"(\d+) more workers died", l) for l in lines) if m)
    return lines, len(lines) - sum(1 for l in lines if "more workers died" in l) + more


def crashstorm(ctx):
    srv = ctx.start_chaos("crashstorm", POOL, wrap=NO_CORE)
    t0 = now()
    crashes = [request(srv.port, "/crash", timeout=5)[0] for _ in range(30)]
    crashing = now() - t0  # a pool in back-off makes each crash wait for a fork
    lat, codes = [], []
    for _ in range(20):
        t0 = now()
        code, body = request(srv.port, timeout=5)
        lat.append(now() - t0)
        codes.append(code if body == SMALL else -code)
    # A storm's summary is written once its second is over.
    eventually(lambda: crash_lines(srv)[1] >= 30, 3)
    lines, accounted = crash_lines(srv)
    named = [l for l in lines if "GET /crash HTTP/1.1" in l]
    backoff = log_lines(srv, "back-off")
    ok = codes.count(200) == 20 and lat[0] <= 1.0 and named and not backoff
    return ok, (f"30 x /crash in {crashing:.1f} s: {crashes.count(0)} closed without an answer, others "
                f"{sorted(set(crashes) - {0})}; "
                f"then 20 x /hello.txt: {codes.count(200)} answered 200, first in {lat[0] * 1000:.1f} ms, "
                f"median {statistics.median(lat) * 1000:.1f} ms, max {max(lat) * 1000:.1f} ms; "
                f"{len(lines)} crash lines logged (accounting for {accounted} crashes), naming "
                f"\"GET /crash HTTP/1.1\": {len(named)}; back-off lines: {len(backoff)}"
                + (f" (first: {backoff[0].strip()[-90:]})" if backoff else ""))


def live_workers(srv):
    """{pid: start time} of srv's live (not zombie) workers."""
    return {pid: t for pid, t in ((p, bench_pool.start_time(p)) for p in children_of(srv.proc.pid) or [])
            if t is not None}


def throw(ctx):
    srv = ctx.start_chaos("throw", POOL)
    srv.wait_stable(1.0, 10)
    before = live_workers(srv)
    codes = [request(srv.port, "/throw", timeout=5)[0] for _ in range(10)]
    # A worker that died is gone (or a zombie) once its client has seen the
    # connection close. The pool may have grown meanwhile (a busy worker
    # leaves fewer spares than min_spare_servers): new pids are no deaths.
    died = lambda: [pid for pid, t in before.items() if bench_pool.start_time(pid) != t]
    eventually(died, 0.5)
    dead, after = died(), live_workers(srv)
    said = [l for l in log_lines(srv, "chaos: thrown on purpose") if "/throw" in l]
    ok = codes.count(500) == 10 and not dead and said
    return ok, (f"10 x /throw answered {', '.join(f'{c} x{codes.count(c)}' for c in sorted(set(codes)))} "
                f"(0: no answer); workers before {sorted(before)}: {len(dead)} died"
                + (f" ({sorted(dead)})" if dead else "")
                + f", {len(set(after) - set(before))} spawned since; log lines naming /throw and the what() "
                f"text: {len(said)}" + (f" ({said[0].strip()[-110:]})" if said else ""))


def refused(port):
    """True when a fresh connect() to port is refused (not merely slow)."""
    s = socket.socket()
    s.settimeout(0.2)
    try:
        s.connect(("127.0.0.1", port))
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        s.close()


def sent(port, path):
    """A connection that has sent GET path (Connection: close)."""
    s = socket.create_connection(("127.0.0.1", port), timeout=5)
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    return s


def answer(s, seconds):
    """(status, body) of what comes back on s within seconds; status 0 and
    the error's name when it closed without an answer or was reset."""
    data, end = b"", now() + seconds
    try:
        while now() < end:
            s.settimeout(max(0.01, end - now()))
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        if not data:
            return 0, type(e).__name__
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 (\d{3})", head)
    return (int(m.group(1)), body) if m else (0, "closed" if not data else "garbage")


def slowlink(ctx):
    """A real client on a slow link, the server not under pressure: curl
    uploads 100 KiB at 2 KiB/s (about 50 s, far past request_timeout) to
    build/chaos_server's POST /upload, which must get the whole body."""
    srv = ctx.start_chaos("slowlink", POOL)
    body = os.path.join(ctx.workdir, "100k.bin")
    with open(body, "wb") as f:
        f.write(os.urandom(100 * 1024))
    t0 = now()
    r = subprocess.run(["curl", "-sS", "--max-time", "90", "--limit-rate", "2K", "--data-binary", "@" + body,
                        "-H", "Content-Type: application/octet-stream", "-o", "-", "-w", " %{http_code}",
                        f"http://127.0.0.1:{srv.port}/upload"],
                       capture_output=True, text=True, timeout=120)
    took = now() - t0
    answer = r.stdout.strip()
    ok = r.returncode == 0 and answer.replace("\n", " ").split() == ["got", "102400", "bytes", "200"]
    return ok and took > 30, (f"curl --limit-rate 2K, 100 KiB: answer {answer.replace(chr(10), ' ')!r} after "
                              f"{took:.1f} s (curl exit {r.returncode}{', ' + r.stderr.strip() if r.stderr else ''})")


def stopping(ctx):
    srv = ctx.start_chaos("stopping", ["--start-servers", "2", "--min-spare-servers", "1",
                                       "--max-spare-servers", "2", "--max-clients", "2"])
    port = srv.port
    def settled():  # two workers, both idle but the one answering this
        st = status_auto(port)
        return (st.get("Processes"), st.get("BusyWorkers"), st.get("IdleWorkers")) == ("2", "1", "1")
    if not eventually(settled, 10):
        return False, f"the pool did not settle at 2 idle workers: {status_auto(port)}"
    sleepers = [sent(port, "/sleep") for _ in range(2)]
    taken = eventually(lambda: listen_queue_len(port) == 0, 1, 0.005)   # each worker took one
    queued = [sent(port, "/hello.txt") for _ in range(5)]
    waiting = eventually(lambda: listen_queue_len(port) == 5, 1, 0.005)  # no worker is free
    t0 = now()
    os.kill(srv.proc.pid, signal.SIGTERM)
    refused_after = None
    while now() < t0 + 2:
        if refused(port):
            refused_after = now() - t0
            break
        time.sleep(0.005)
    slept = [answer(s, 10) for s in sleepers]
    served = [answer(s, 10) for s in queued]
    try:
        code = srv.proc.wait(max(0.0, t0 + 35 - now()))  # graceful_timeout is 30 s
    except subprocess.TimeoutExpired:
        code = None
    exited = now() - t0
    ok = (taken and waiting and refused_after is not None and refused_after <= 0.1 and
          all(a == (200, b"slept\n") for a in slept) and all(a == (200, SMALL) for a in served) and code == 0)
    how = lambda answers: ", ".join(str(a[0]) if a[0] else a[1] for a in answers)
    return ok, (f"2 workers busy with /sleep: {taken}, 5 requests in the listen queue: {waiting}; after "
                f"SIGTERM a new connect() was refused "
                + (f"after {refused_after * 1000:.1f} ms" if refused_after is not None else "NOT within 2 s")
                + f"; the /sleep requests: {how(slept)}; the queued ones: {how(served)}; master exit {code}"
                + (f" {exited:.1f} s after SIGTERM" if code is not None else " (still running 35 s after SIGTERM)"))


def listen_queue_len(port):
    q = bench_pool.listen_queue(port)
    return q[0] if q else None


# --------------------------------------------------------------------------
# Two httpds behind haproxy: restarts and upgrades one at a time under load

HAPROXY_CONFIG = """global
    stats socket {sock} mode 600 level admin
    maxconn 1024

defaults
    mode http
    timeout connect 1s
    timeout client 10s
    timeout server 10s
    retries 3
    option redispatch

frontend www
    bind 127.0.0.1:{port}
    default_backend httpds

backend httpds
    balance roundrobin
    option httpchk GET /hello.txt
    http-check expect status 200
    default-server inter 200ms fall 2 rise 2
    server a 127.0.0.1:{a} check
    server b 127.0.0.1:{b} check
"""


def haproxy_stat(sock_path):
    """haproxy's `show stat` as a list of dicts, [] when it does not answer."""
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(2)
            s.connect(sock_path)
            s.sendall(b"show stat\n")
            data = recv_all(s)
    except OSError:
        return []
    lines = data.decode("latin-1").splitlines()
    if not lines or not lines[0].startswith("# "):
        return []
    keys = lines[0][2:].split(",")
    return [dict(zip(keys, l.split(","))) for l in lines[1:] if l]


def backend_row(sock_path, server):
    for row in haproxy_stat(sock_path):
        if row.get("pxname") == "httpds" and row.get("svname") == server:
            return row
    return {}


# haproxy's per-server counters that tell where a request went wrong:
# connect errors, response errors (reset or closed before the answer),
# aborts on the server side, retries, redispatches, 5xx.
HAPROXY_COUNTERS = ("econ", "eresp", "srv_abrt", "wretr", "wredis", "hrsp_5xx")


def haproxy_counters(sock_path):
    total = dict.fromkeys(HAPROXY_COUNTERS, 0)
    for row in haproxy_stat(sock_path):
        if row.get("pxname") == "httpds" and row.get("svname") not in ("FRONTEND", "BACKEND"):
            for k in HAPROXY_COUNTERS:
                total[k] += int(row.get(k) or 0)
    return total


def stays(pred, window_s, deadline_s, step=0.02):
    """True once pred() has held for window_s in a row, within deadline_s."""
    end, since = now() + deadline_s, None
    while now() < end:
        if pred():
            since = since or now()
            if now() - since >= window_s:
                return True
        else:
            since = None
        time.sleep(step)
    return False


class Backend:
    """One httpd behind haproxy, on a fixed port (haproxy's config names it),
    with its own directory for the pid file and log; tracked by pid, since a
    binary upgrade replaces the master."""

    def __init__(self, ctx, binary, name):
        self.ctx, self.binary, self.name = ctx, binary, name
        self.port = bench_pool.free_port()
        self.dir = os.path.join(ctx.workdir, f"balancer-{name}")
        os.makedirs(self.dir, exist_ok=True)
        if os.geteuid() == 0:  # the pid file is written by the user it became
            import pwd
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
        self.pid_file = os.path.join(self.dir, "httpd.pid")
        self.log = os.path.join(self.dir, "httpd.log")
        self.pid, self.proc = 0, None

    def reap(self, pid, seconds):
        """The exit code of master pid, or None after seconds. The one we
        started is waited for through its Popen, so that nothing else reaps it."""
        if self.proc is not None and self.proc.pid == pid:
            try:
                return self.proc.wait(seconds)
            except subprocess.TimeoutExpired:
                return None
        return wait_pid(pid, seconds)

    def start(self):
        user = ["--user", "nobody"] if os.geteuid() == 0 else []
        cmd = [self.binary] + user + ["--listen", f"127.0.0.1:{self.port}", "--pid-file", self.pid_file,
                                      os.path.join(self.ctx.workdir, "www")]
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.dir,
                                         start_new_session=True)
        self.pid = self.proc.pid
        return eventually(lambda: request(self.port, timeout=1)[0] == 200, 10)

    def stop(self, sig=signal.SIGTERM, seconds=35):
        """Signals the master (sig None: it was), waits for it (graceful_timeout
        is 30 s), SIGKILL past that; its exit code or None."""
        if not self.pid:
            return None
        try:
            if sig:
                os.kill(self.pid, sig)
        except OSError:
            pass
        code = self.reap(self.pid, seconds)
        if code is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
            except OSError:
                pass
            self.reap(self.pid, 5)
        self.pid = 0
        return code


BALANCER_LOAD_S = 150  # wrk's bound; stopped (SIGINT) once the sequence is over


def balancer(ctx):
    if not ctx.haproxy:
        return None, "skipped: no haproxy"
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(36, 1)  # PR_SET_CHILD_SUBREAPER: upgraded masters become our children
    binary = os.path.join(ctx.workdir, "httpd-balanced")  # nobody must be able to run it again
    install(ctx.httpd, binary)
    backends = [Backend(ctx, binary, "a"), Backend(ctx, binary, "b")]
    hport = bench_pool.free_port()
    sock_path = os.path.join(ctx.workdir, "haproxy.sock")
    config = HAPROXY_CONFIG.format(sock=sock_path, port=hport, a=backends[0].port, b=backends[1].port)
    conf_path = os.path.join(ctx.workdir, "haproxy.cfg")
    with open(conf_path, "w") as f:
        f.write(config)
    print("balancer: haproxy config\n" + "".join("    " + l + "\n" for l in config.splitlines()), end="")
    haproxy = wrk = None
    steps, failures = [], []
    up = lambda b: lambda: backend_row(sock_path, b.name).get("status") == "UP"
    # UP through two checks of the new master (inter 200ms): a restart
    # quicker than fall 2 never shows DOWN, so UP alone could be stale.
    stays_up = lambda b: stays(up(b), 0.5, 10)

    def counted(what, before):
        after = haproxy_counters(sock_path)
        delta = ", ".join(f"{k} +{after[k] - before[k]}" for k in HAPROXY_COUNTERS if after[k] != before[k])
        steps.append(f"{what} (haproxy: {delta or 'no errors, retries or redispatches'})")
    try:
        for b in backends:
            if not b.start():
                return False, f"httpd {b.name} did not start: {open(b.log, errors='replace').read()[-300:]}"
        with open(os.path.join(ctx.workdir, "haproxy.log"), "wb") as log:
            haproxy = subprocess.Popen([ctx.haproxy, "-db", "-f", conf_path], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=log, cwd=ctx.workdir, start_new_session=True)
        if not all(eventually(up(b), 10) for b in backends):
            seen = [backend_row(sock_path, b.name).get("status") for b in backends]
            return False, f"haproxy does not see both httpds UP: {seen}"
        wrk = subprocess.Popen([ctx.wrk.binary, "-t2", "-c16", f"-d{BALANCER_LOAD_S}s", "--latency",
                                f"http://127.0.0.1:{hport}/hello.txt"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(1)  # load first, then the first stop
        for b in backends:  # stop and start again, one at a time
            t0, before = now(), haproxy_counters(sock_path)
            code = b.stop()
            t1 = now()
            started = b.start()
            back = started and stays_up(b)
            counted(f"{b.name}: SIGTERM, exit {code} after {t1 - t0:.1f} s, started and UP again "
                    f"{now() - t1:.1f} s later", before)
            if code != 0 or not back:
                failures.append(f"restart of {b.name}: exit {code}, started {started}, UP {back}")
        for b in backends:  # binary upgrades, one at a time
            t0, old, before = now(), b.pid, haproxy_counters(sock_path)
            install(ctx.httpd, binary)
            os.kill(old, signal.SIGUSR2)
            new = pid_in(b.pid_file) if eventually(lambda: pid_in(b.pid_file) not in (0, old), 15) else 0
            code = b.reap(old, 35)
            if new:
                b.pid = new
            back = stays_up(b)
            counted(f"{b.name}: SIGUSR2, upgraded ({old} -> {new}, old exit {code}) and UP in "
                    f"{now() - t0:.1f} s", before)
            if not new or code != 0 or not back:
                failures.append(f"upgrade of {b.name}: new master {new}, old exit {code}, UP {back}")
        time.sleep(1)  # and a last second of load
        if wrk.poll() is not None:
            failures.append(f"the load ({BALANCER_LOAD_S} s) ended before the sequence did")
        wrk.send_signal(signal.SIGINT)  # wrk stops and reports
        r = Wrk.finish(wrk, 0)
        wrk = None
        through = request(hport)[0] == 200
    finally:
        if wrk is not None:
            wrk.kill()
            wrk.wait()
        if haproxy is not None:
            stop(haproxy, 5)
        for b in backends:  # both drain at once
            if b.pid:
                os.kill(b.pid, signal.SIGTERM)
        for b in backends:
            b.stop(sig=None)
        libc.prctl(36, 0)
    ok = r["requests"] > 0 and r["failed"] == 0 and not failures and through
    return ok, (f"{'; '.join(steps)}; through haproxy (wrk -t2 -c16): {describe(r)}; answers after: {through}"
                + (f"; FAILED STEPS: {'; '.join(failures)}" if failures else ""))


def fetch(port, path, timeout=2.0):
    """A GET of http://127.0.0.1:port/path: the body, or "" on failure."""
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        s.settimeout(timeout)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
        data = recv_all(s)
        s.close()
    except OSError:
        return ""
    return data.partition(b"\r\n\r\n")[2].decode("latin-1")


def exporter(ctx):
    if not ctx.apache_exporter:
        return None, "prometheus-apache-exporter not installed"
    srv = ctx.start("exporter", [])
    for _ in range(3):
        request(srv.port)
    port = bench_pool.free_port()
    log = os.path.join(ctx.workdir, "exporter.log")
    with open(log, "wb") as out:
        p = subprocess.Popen([ctx.apache_exporter,
                              f"--scrape_uri=http://127.0.0.1:{srv.port}/server-status?auto",
                              f"--telemetry.address=127.0.0.1:{port}"],
                             stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    metrics = ""
    try:
        def scraped():
            nonlocal metrics
            metrics = fetch(port, "/metrics")
            return re.search(r"^apache_up 1$", metrics, re.M) is not None
        up = eventually(scraped, 10, 0.2)
        alive = p.poll() is None
    finally:
        stop(p, 5)
    wanted = [r'^apache_up 1$', r'^apache_version 0\.01$',
              r'^apache_accesses_total [1-9]', r'^apache_workers\{state="idle"\} [0-9]',
              r'^apache_scoreboard\{state="idle"\} [0-9]', r'^apache_uptime_seconds_total [0-9]']
    missing = [w for w in wanted if not re.search(w, metrics, re.M)]
    with open(log, "rb") as f:
        said = f.read().decode("latin-1")
    ok = up and alive and not missing and "panic" not in said
    found = [line for line in metrics.splitlines() if line.startswith(("apache_up", "apache_version",
                                                                       "apache_accesses_total", "apache_workers"))]
    return ok, (f"apache_up 1: {up}; exporter still running: {alive}; "
                f"missing: {missing or 'none'}; {'; '.join(found)}"
                + (f"; exporter log: {said[-400:]}" if not ok else ""))


SCENARIOS = [("massacre", massacre), ("restarts", restarts), ("drain", drain),
             ("slowloris", slowloris), ("hung", hung), ("crashloop", crash_loop),
             ("nproc", fork_failure), ("leaks", leaks), ("privilege", privilege),
             ("upgrade", upgrade), ("slowheaders", slowheaders), ("slowbody", slowbody),
             ("slowread", slowread), ("crashstorm", crashstorm), ("throw", throw),
             ("slowlink", slowlink), ("stopping", stopping), ("exporter", exporter),
             ("balancer", balancer)]


class Context:
    def __init__(self, args):
        self.workdir = args.workdir
        self.httpd = args.httpd
        self.chaos_server = os.path.abspath(args.chaos_server)
        self.wrk = Wrk(args.wrk)
        self.nginx, self.haproxy, self.slowhttptest = args.nginx, args.haproxy, args.slowhttptest
        self.apache_exporter = args.apache_exporter
        self.servers = []

    def start(self, tag, extra):
        return self.started(Httpd(self.httpd, self.workdir, tag, extra))

    def start_binary(self, binary, tag, extra):
        return self.started(Httpd(binary, self.workdir, tag, extra))

    def start_chaos(self, tag, extra, wrap=()):
        return self.started(ChaosServer(self.chaos_server, self.workdir, tag, extra, wrap))

    def started(self, srv):
        """Starts srv (stopped by stop_all whatever happens) and waits for a 200."""
        self.servers.append(srv)
        srv.start({})
        if not eventually(lambda: request(srv.port)[0] == 200, 10):
            raise Skip(f"{srv.name} ({srv.tag}) does not answer: {srv.log_tail()}")
        return srv

    def stop_all(self):
        for srv in self.servers:
            srv.stop()
        self.servers = []


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--httpd", required=True)
    ap.add_argument("--wrk", default="")
    ap.add_argument("--chaos-server", required=True)
    ap.add_argument("--nginx", default="", help="for comparison in the slow* scenarios")
    ap.add_argument("--haproxy", default="", help="for balancer")
    ap.add_argument("--slowhttptest", default="", help="for the slow* scenarios")
    ap.add_argument("--apache-exporter", default="", help="for exporter")
    ap.add_argument("--only", default="", help="comma-separated scenario names (default: all)")
    args = ap.parse_args()
    if not args.wrk:
        print("chaos: wrk is needed")
        return 1
    wanted = set(filter(None, args.only.split(",")))
    unknown = wanted - {name for name, _ in SCENARIOS}
    if unknown:
        print(f"chaos: no scenario {', '.join(sorted(unknown))}; there are "
              f"{', '.join(name for name, _ in SCENARIOS)}")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    www = os.path.join(args.workdir, "www")
    os.makedirs(www, exist_ok=True)
    with open(os.path.join(www, "hello.txt"), "wb") as f:
        f.write(SMALL)
    with open(os.path.join(www, "big.bin"), "wb") as f:
        f.write(random.Random(7).randbytes(BIG_SIZE))
    with open(os.path.join(www, MIB_NAME), "wb") as f:
        f.write(random.Random(8).randbytes(MIB_SIZE))
    os.chmod(args.workdir, 0o755)  # workers may run as nobody
    os.chmod(www, 0o755)
    for name in os.listdir(www):
        os.chmod(os.path.join(www, name), 0o644)
    ctx = Context(args)
    passed = failed = skipped = 0
    started = now()
    try:
        for name, fn in SCENARIOS:
            if wanted and name not in wanted:
                continue
            t0 = now()
            try:
                ok, figures = fn(ctx)
            except Skip as e:
                ok, figures = False, f"could not run: {e}"
            finally:
                ctx.stop_all()
            if ok is None:
                skipped += 1
            else:
                passed += bool(ok)
                failed += not ok
            verdict = "SKIP" if ok is None else "PASS" if ok else "FAIL"
            print(f"{name:10} {verdict} ({now() - t0:.0f} s): {figures}", flush=True)
    except KeyboardInterrupt:
        ctx.stop_all()
        print("interrupted")
        return 130
    print(f"{passed} passed, {failed} failed" + (f", {skipped} skipped" if skipped else "")
          + f" ({now() - started:.0f} s)")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
