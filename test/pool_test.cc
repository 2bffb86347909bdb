// pool_test.cc - the pool as a whole: real parents, real workers, real
// connections over loopback. Each test starts a server in its own process
// group (harness.h); every wait has a deadline.
#include "harness.h"
#include "prefork.h"

#include <gtest/gtest.h>

#include <atomic>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>
#include <stdexcept>
#include <thread>

#include <fcntl.h>
#include <sched.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

using harness::ask;
using harness::Client;
using harness::eventually;
using harness::TestServer;

// The pid in an answer like "pid 123 gen 1" or "held 123".
static pid_t pid_in(const std::string &answer) {
    std::istringstream in(answer);
    std::string word;
    long pid = -1;
    in >> word >> pid;
    return pid_t(pid);
}

static bool contains(const std::vector<pid_t> &pids, pid_t pid) {
    return std::find(pids.begin(), pids.end(), pid) != pids.end();
}

static bool exited_zero(int status) { return status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0; }

// The millisecond stamp that starts a harness log line.
static long long stamp(const std::string &line) { return atoll(line.c_str()); }

// The number after `key` in a line ("started worker 123 ...").
static pid_t number_after(const std::string &line, const std::string &key) {
    size_t at = line.find(key);
    return at == std::string::npos ? -1 : pid_t(atol(line.c_str() + at + key.size()));
}

TEST(Pool, ForksStartServersWorkers) {
    TestServer t;
    t.options.start_servers = 3;
    t.options.min_spare_servers = 1;
    t.options.max_spare_servers = 5;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(3));
    std::string sb;
    EXPECT_TRUE(eventually([&] {  // the worker answering is the busy one
        sb = ask(t.address(), "sb");
        return sb.compare(0, 15, "idle 2 busy 1 s") == 0;
    })) << sb;
}

TEST(Pool, StartServersIsClampedToMaxClients) {
    TestServer t;
    t.options.start_servers = 6;
    t.options.max_clients = 3;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_log("start_servers 6 is above max_clients 3; starting 3"));
    ASSERT_TRUE(t.wait_workers(3));
}

TEST(Pool, KeepsMinSpareServersIdle) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 3;
    t.options.max_spare_servers = 5;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(3));
    // Two connections held busy: three idle ones are still wanted, so five.
    Client a(t.address()), b(t.address());
    ASSERT_TRUE(a.send("hold\n") && b.send("hold\n"));
    EXPECT_NE(a.line(), "");
    EXPECT_NE(b.line(), "");
    EXPECT_TRUE(t.wait_workers(5));
}

// A burst of connections that each hold a worker: the pool grows to serve
// them all, woken by its workers, well before any timeout could help.
TEST(Pool, GrowsToServeABurstOfHeldConnections) {
    for (int round = 0; round < 4; round++) {  // a fresh pool of 2 each time
        TestServer t;
        t.options.start_servers = 2;
        t.options.min_spare_servers = 2;
        t.options.max_spare_servers = 4;
        t.options.max_clients = 48;
        ASSERT_TRUE(t.start());
        ASSERT_TRUE(t.wait_workers(2));
        std::vector<std::unique_ptr<Client>> clients;
        for (int i = 0; i < 40; i++) {
            clients.emplace_back(new Client(t.address()));
            ASSERT_TRUE(clients.back()->send("hold\n"));
        }
        int held = 0;
        for (auto &c : clients)
            if (!c->line(5000).empty()) held++;
        EXPECT_EQ(held, 40) << "round " << round << "\n" << t.log();
        for (auto &c : clients) c->send("release\n");
    }
}

TEST(Pool, RetiresTheOldestIdleWorkersOneAtATime) {
    TestServer t;
    t.options.start_servers = 5;
    t.options.min_spare_servers = 1;
    t.options.max_spare_servers = 2;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_log("retiring idle worker", 3));
    ASSERT_TRUE(t.wait_workers(2));
    std::vector<std::string> started = t.log_lines("started worker ");
    std::vector<std::string> retired = t.log_lines("retiring idle worker ");
    ASSERT_EQ(started.size(), 5u) << t.log();
    ASSERT_EQ(retired.size(), 3u) << t.log();
    for (size_t i = 1; i < retired.size(); i++) {
        EXPECT_GE(stamp(retired[i]) - stamp(retired[i - 1]), 200) << "retired all at once";
    }
    // Each retirement takes the oldest worker that is idle at that moment
    // (one still starting is not a candidate), so the two left are the two
    // youngest.
    std::vector<pid_t> workers = t.workers();
    std::set<pid_t> survivors(workers.begin(), workers.end());
    EXPECT_EQ(survivors, (std::set<pid_t>{number_after(started[3], "started worker "),
                                          number_after(started[4], "started worker ")}))
        << t.log();
}

TEST(Pool, NeverMoreThanMaxClientsExtraConnectionsWait) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 2;
    t.options.max_spare_servers = 4;
    t.options.max_clients = 3;
    ASSERT_TRUE(t.start());
    std::vector<std::unique_ptr<Client>> clients;
    for (int i = 0; i < 5; i++) {
        clients.emplace_back(new Client(t.address()));
        ASSERT_TRUE(clients.back()->send("hold\n"));
    }
    int held = 0;
    for (auto &c : clients)
        if (!c->line(held < 3 ? 5000 : 300).empty()) held++;
    EXPECT_EQ(held, 3);
    EXPECT_LE(t.workers().size(), 3u);
    // Releasing one lets a waiting connection in.
    int released = -1;
    for (int i = 0; i < 5 && released < 0; i++)
        if (clients[size_t(i)]->send("release\n") && clients[size_t(i)]->line(300) == "bye") released = i;
    ASSERT_GE(released, 0);
    int late = 0;
    for (auto &c : clients)
        if (c.get() != clients[size_t(released)].get() && !c->line(200).empty()) late++;
    EXPECT_TRUE(late == 1 || eventually([&] {
        for (auto &c : clients)
            if (!c->line(50).empty()) return true;
        return false;
    })) << "a waiting connection was not served";
    EXPECT_LE(t.workers().size(), 3u);
}

// A worker the scoreboard shows idle ('_'): past its start, and not the one
// that answered the question (busy until it closes). 0 if there is none.
static pid_t idle_worker(const TestServer &t) {
    std::istringstream board(harness::ask(t.address(), "sb"));
    std::string word;
    pid_t pid = 0, idle = 0;
    while (board >> word) {
        if (word == "pid") board >> pid;
        if (word == "state" && board >> word && word == "_" && pid > 0) idle = pid;
    }
    return idle;
}

TEST(Pool, ReplacesAWorkerKilledWithSigkill) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.min_spare_servers = 2;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(2));
    // A worker past its start: one killed while starting is a failed start
    // (back-off), and under qemu the workers may still be starting.
    pid_t victim = 0;
    ASSERT_TRUE(eventually([&] { return (victim = idle_worker(t)) > 0; }));
    ASSERT_EQ(kill(victim, SIGKILL), 0);
    // Two or more: the question above took a worker, which may have made
    // the pool grow by one.
    EXPECT_TRUE(eventually([&] {
        std::vector<pid_t> now = t.workers();
        return now.size() >= 2 && !contains(now, victim);
    }));
    EXPECT_TRUE(t.wait_log("worker " + std::to_string(victim) + " was killed by signal 9"));
    EXPECT_NE(ask(t.address(), "pid"), "");
    // Killed from outside is not a crash: no back-off, however young.
    EXPECT_TRUE(t.log_lines("back-off").empty()) << t.log();
}

// A handler that crashes is a bug in one request, not a worker that cannot
// start: the worker is replaced at once, the log says what it was serving,
// and a storm of such deaths is logged a few lines a second, never with
// the start-up back-off (which would make one bad URL stop the pool).
TEST(Pool, AWorkerCrashingWhileServingIsReplacedAtOnceWithoutBackOff) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.min_spare_servers = 2;
    ASSERT_TRUE(t.start());
    for (int i = 0; i < 30; i++) {
        Client c(t.address());
        ASSERT_TRUE(c.send("crash\n"));
        std::string rest;
        EXPECT_TRUE(c.until_eof(&rest)) << "crash " << i;
    }
    std::string answer = ask(t.address(), "pid", 2000);
    EXPECT_EQ(answer.compare(0, 4, "pid "), 0) << answer << "\n" << t.log();
    EXPECT_TRUE(t.wait_log("was killed by signal 6 (Aborted) while serving \"crash\"")) << t.log();
    EXPECT_TRUE(t.log_lines("back-off").empty()) << t.log();
    size_t lines = t.log_lines("while serving").size();
    EXPECT_GE(lines, 1u);
    EXPECT_LT(lines, 30u) << "every death logged one by one: " << t.log();
    // The deaths not logged one by one are summed up once their second is over.
    EXPECT_TRUE(t.wait_log("more workers died while serving in the last")) << t.log();
    EXPECT_TRUE(eventually([&] { return t.workers().size() >= 2; }));
}

// Built with exceptions, one escaping on_connection's handler closes that
// connection, is logged with what the worker was serving, and the same
// worker goes on.
TEST(Pool, AConnectionHandlerThatThrowsLeavesTheWorkerServing) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.max_spare_servers = 1;
    t.handler = [](prefork::Worker &w, int fd) {
        w.count_request("throw please", 0);
        char byte;
        if (read(fd, &byte, 1) == 1 && byte == 't') throw std::runtime_error("thrown on purpose");
        std::string pid = "pid " + std::to_string(getpid()) + "\n";
        (void)!write(fd, pid.data(), pid.size());
    };
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(1));
    std::vector<pid_t> before = t.workers();
    for (int i = 0; i < 3; i++) {
        Client c(t.address());
        ASSERT_TRUE(c.send("t"));
        std::string rest;
        EXPECT_TRUE(c.until_eof(&rest));
        EXPECT_EQ(rest, "");
    }
    EXPECT_TRUE(t.wait_log("the connection handler threw while serving \"throw please\": thrown on purpose; "
                           "closing the connection", 3)) << t.log();
    // The worker that threw still serves (a spare forked meanwhile may
    // take this one) and none died.
    std::string answer = ask(t.address(), "p");
    EXPECT_EQ(answer.compare(0, 4, "pid "), 0) << answer << t.log();
    EXPECT_TRUE(contains(t.workers(), before.at(0)));
    EXPECT_TRUE(t.log_lines("signal").empty()) << t.log();
}

TEST(Pool, AnInitHookThatThrowsFailsItsWorker) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.hooks.push_back([](prefork::Worker &) -> bool { throw std::runtime_error("no database"); });
    ASSERT_TRUE(t.start());
    EXPECT_TRUE(t.wait_log("worker init hook threw: no database; worker exiting", 2)) << t.log();
    EXPECT_TRUE(t.wait_log("before it was ready; failure 2 in a row")) << t.log();
}

TEST(Pool, MaxRequestsPerChildRecyclesWithoutLosingARequest) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.max_clients = 1;
    t.options.max_requests_per_child = 3;
    ASSERT_TRUE(t.start());
    std::map<pid_t, int> served;
    for (int i = 0; i < 10; i++) {
        std::string answer = ask(t.address(), "pid");
        ASSERT_NE(answer, "") << "request " << i << " was lost";
        served[pid_in(answer)]++;
    }
    EXPECT_EQ(served.size(), 4u);
    for (auto &entry : served) {
        EXPECT_LE(entry.second, 3);
    }
    EXPECT_TRUE(t.wait_log("worker served 3 connections (max_requests_per_child); exiting", 3));
}

TEST(Pool, MaxRequestsJitterSpreadsRecycling) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.max_clients = 1;
    t.options.max_requests_per_child = 2;
    t.options.max_requests_jitter = 3;
    ASSERT_TRUE(t.start());
    std::vector<pid_t> order;
    for (int i = 0; i < 40; i++) {
        std::string answer = ask(t.address(), "pid");
        ASSERT_NE(answer, "") << "request " << i << " was lost";
        order.push_back(pid_in(answer));
    }
    std::map<pid_t, int> served;
    for (pid_t pid : order) served[pid]++;
    std::set<int> counts;
    for (auto &entry : served)
        if (entry.first != order.back()) {  // the last worker may not be done
            EXPECT_GE(entry.second, 2);
            EXPECT_LE(entry.second, 5);
            counts.insert(entry.second);
        }
    EXPECT_GE(served.size(), 8u);
    EXPECT_GE(counts.size(), 2u) << "every worker recycled after the same count";
}

TEST(Pool, WorkerOverMaxRssIsRecycled) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.max_clients = 1;
    t.options.max_rss_kib = 64 * 1024;
    ASSERT_TRUE(t.start());
    pid_t first = pid_in(ask(t.address(), "pid"));
    EXPECT_EQ(pid_in(ask(t.address(), "pid")), first);
    EXPECT_EQ(pid_in(ask(t.address(), "grow 100000")), first);
    EXPECT_TRUE(t.wait_log("is over max_rss_kib 65536; exiting"));
    pid_t next = pid_in(ask(t.address(), "pid"));
    EXPECT_GT(next, 0);
    EXPECT_NE(next, first);
}

TEST(Pool, BusyWorkerWithoutHeartbeatIsKilledAndReplaced) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.min_spare_servers = 1;
    t.options.timeout = 1;
    t.options.kill_grace = 0.3;
    ASSERT_TRUE(t.start());
    Client c(t.address());
    ASSERT_TRUE(c.send("hang\n"));
    pid_t hung = pid_in(c.line());
    ASSERT_GT(hung, 0);
    std::string key = "busy worker " + std::to_string(hung) + " timed out";
    ASSERT_TRUE(t.wait_log(key, 1, 8000));
    std::string line = t.log_lines(key)[0];
    EXPECT_NE(line.find("serving \"hang\""), std::string::npos) << line;
    EXPECT_TRUE(t.wait_log("worker " + std::to_string(hung) + " did not exit after its timeout; sending SIGKILL"));
    std::string rest;
    EXPECT_TRUE(c.until_eof(&rest)) << "the client of a killed worker should see the connection close";
    EXPECT_TRUE(eventually([&] { return !contains(t.workers(), hung); }));
    EXPECT_NE(ask(t.address(), "pid"), "");
}

// The watchdog's SIGTERM is visible to a handler through stopping(): a
// slow handler that checks it finishes cleanly within the grace period.
TEST(Pool, TheWatchdogsSigtermReachesACooperativeHandler) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.timeout = 1;
    t.options.kill_grace = 10;
    ASSERT_TRUE(t.start());
    Client c(t.address());
    ASSERT_TRUE(c.send("linger\n"));
    pid_t slow = pid_in(c.line());
    ASSERT_GT(slow, 0);
    EXPECT_EQ(c.line(8000), "bye stopping");
    std::string ended = "worker " + std::to_string(slow) + " exited with status 0";
    EXPECT_TRUE(t.wait_log(ended)) << t.log();
    EXPECT_TRUE(t.log_lines("sending SIGKILL").empty()) << t.log();
}

// A worker that takes the lock and then hangs must not wedge the parent:
// it waits for the lock only so long, and its watchdog still runs.
TEST(Pool, AWorkerHangingWithTheLockIsStillKilled) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.min_spare_servers = 2;
    t.options.timeout = 1;
    t.options.kill_grace = 0.3;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(2));
    Client c(t.address());
    ASSERT_TRUE(c.send("lock\n"));
    pid_t holder = pid_in(c.line());
    ASSERT_GT(holder, 0);
    // Its turning busy asks for a spare; spawning one wants the lock.
    EXPECT_TRUE(t.wait_log("busy worker " + std::to_string(holder) + " timed out", 1, 8000)) << t.log();
    EXPECT_TRUE(eventually([&] { return !contains(t.workers(), holder); }));
    EXPECT_EQ(ask(t.address(), "sb").compare(0, 5, "idle "), 0);
}

TEST(Pool, HeartbeatKeepsALongHandlerAlive) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.timeout = 1;
    ASSERT_TRUE(t.start());
    std::string answer = ask(t.address(), "beat 2500", 8000);
    EXPECT_EQ(answer.compare(0, 5, "done "), 0) << answer;
    EXPECT_TRUE(t.log_lines("timed out").empty()) << t.log();
}

TEST(Pool, IdleWorkerThatStopsReportingIsKilled) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.min_spare_servers = 2;
    t.options.timeout = 1;
    t.options.kill_grace = 0.3;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(2));
    // Freeze a worker the scoreboard shows idle: not one still starting (a
    // slow machine, or qemu, may be starting them) and not the one that
    // answered the question (busy until it closes).
    pid_t frozen = 0;
    ASSERT_TRUE(eventually([&] { return (frozen = idle_worker(t)) > 0; }));
    ASSERT_EQ(kill(frozen, SIGSTOP), 0);
    EXPECT_TRUE(t.wait_log("idle worker " + std::to_string(frozen) + " timed out", 1, 8000))
        << t.log();
    EXPECT_TRUE(eventually([&] {
        std::vector<pid_t> now = t.workers();
        return now.size() == 2 && !contains(now, frozen);
    }, 8000));
}

TEST(Pool, InitHooksRunInEveryWorkerAndNeverInTheParent) {
    char path[] = "/tmp/prefork-test-hooks-XXXXXX";
    int fd = mkstemp(path);
    ASSERT_GE(fd, 0);
    close(fd);
    std::string hooks_file = path;
    TestServer t;
    t.options.start_servers = 3;
    t.options.min_spare_servers = 1;
    t.hooks.push_back([hooks_file](prefork::Worker &w) {
        FILE *f = fopen(hooks_file.c_str(), "a");
        if (!f) return false;
        fprintf(f, "%d %d\n", int(getpid()), w.is_child() ? 1 : 0);
        fclose(f);
        harness::set_hook_record("ran in " + std::to_string(getpid()));
        return true;
    });
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(3));
    std::vector<pid_t> workers = t.workers();
    std::set<pid_t> hooked;
    EXPECT_TRUE(eventually([&] {
        hooked.clear();
        std::ifstream in(hooks_file);
        int pid, child;
        while (in >> pid >> child) {
            EXPECT_EQ(child, 1) << "is_child() was false inside a worker";
            hooked.insert(pid);
        }
        return hooked.size() >= 3;
    }));
    for (pid_t w : workers) {
        EXPECT_TRUE(hooked.count(w)) << "worker " << w << " ran no hook";
    }
    EXPECT_FALSE(hooked.count(t.pid())) << "a hook ran in the parent";
    Client c(t.address());
    ASSERT_TRUE(c.send("hook\n"));
    std::string answer = c.line();
    EXPECT_EQ(answer.compare(0, 7, "ran in "), 0) << answer;
    unlink(path);
}

TEST(Pool, AWorkerCanPauseAndResumeAccepting) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.min_spare_servers = 1;
    t.options.max_clients = 2;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(2));
    pid_t paused = pid_in(ask(t.address(), "pause 3000"));
    ASSERT_GT(paused, 0);
    Client hold(t.address());
    ASSERT_TRUE(hold.send("hold\n"));
    pid_t other = pid_in(hold.line());
    EXPECT_NE(other, paused) << "a paused worker accepted";
    // Now one worker is busy and the other paused: a request must wait
    // for the pause to end, then be served by the paused worker.
    Client late(t.address());
    ASSERT_TRUE(late.send("pid\n"));
    EXPECT_EQ(late.line(300), "") << "served while every worker was busy or paused";
    EXPECT_EQ(pid_in(late.line(8000)), paused);
}

// A paused worker is not a spare: when the only idle worker pauses, the
// parent forks another so that someone accepts.
TEST(Pool, APausedWorkerDoesNotCountAsASpare) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.max_clients = 4;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(1));
    pid_t paused = pid_in(ask(t.address(), "pause 60000"));
    ASSERT_GT(paused, 0);
    EXPECT_TRUE(t.wait_workers(2)) << "no spare replaced the paused worker\n" << t.log();
    std::string answer = ask(t.address(), "pid");
    EXPECT_NE(pid_in(answer), paused) << answer;
    EXPECT_GT(pid_in(answer), 0);
}

TEST(Pool, SigtermDrainsInFlightWorkThenExitsCleanly) {
    TestServer t;
    t.options.start_servers = 3;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(3));
    Client c(t.address());
    ASSERT_TRUE(c.send("hold\n"));
    pid_t busy = pid_in(c.line());
    ASSERT_GT(busy, 0);
    ASSERT_TRUE(t.signal(SIGTERM));
    ASSERT_TRUE(t.wait_log("SIGTERM: draining"));
    // The idle workers leave at once; the busy one stays with its client.
    EXPECT_TRUE(eventually([&] { return t.workers() == std::vector<pid_t>{busy}; }));
    EXPECT_TRUE(c.send("release\n"));
    EXPECT_EQ(c.line(), "bye");
    EXPECT_TRUE(exited_zero(t.wait_exit()));
    EXPECT_FALSE(Client(t.address()).connected()) << "still accepting after the drain";
    EXPECT_EQ(harness::ipc_objects_of(t.pid()), 0);
}

// A graceful stop refuses new connections at once, while the busy worker
// finishes; connections already waiting in the listen queue are served
// (by a drain worker, once a slot is free), not reset. Once for TCP, where
// shutdown() would reset the queue, and once for a UNIX socket.
static void refuses_at_once_and_serves_the_queue(const std::string &spec) {
    TestServer t;
    t.listen_specs = {spec};
    t.options.max_clients = 1;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.max_spare_servers = 1;
    ASSERT_TRUE(t.start());
    Client held(t.address());
    ASSERT_TRUE(held.send("hold\n"));
    ASSERT_EQ(held.line().compare(0, 5, "held "), 0);
    std::vector<std::unique_ptr<Client>> queued;
    for (int i = 0; i < 3; i++) {
        queued.emplace_back(new Client(t.address()));
        ASSERT_TRUE(queued.back()->connected());
        ASSERT_TRUE(queued.back()->send("pid\n"));
    }
    ASSERT_TRUE(t.signal(SIGTERM));
    EXPECT_TRUE(eventually([&] { return !Client(t.address()).connected(); }, 2000))
        << "still accepting new connections after SIGTERM";
    EXPECT_TRUE(t.wait_log("connections were waiting in the listen queue")) << t.log();
    ASSERT_TRUE(held.send("release\n"));
    EXPECT_EQ(held.line(), "bye");
    for (auto &c : queued) EXPECT_EQ(c->line().compare(0, 4, "pid "), 0) << t.log();
    EXPECT_TRUE(exited_zero(t.wait_exit())) << t.log();
}

TEST(Pool, GracefulStopRefusesNewConnectionsAndServesTheQueue) {
    refuses_at_once_and_serves_the_queue("127.0.0.1:0");
}

TEST(Pool, GracefulStopOnAUnixSocketServesItsQueueToo) {
    char dir[] = "/tmp/prefork-door-XXXXXX";
    ASSERT_NE(mkdtemp(dir), nullptr);
    std::string path = std::string(dir) + "/s.sock";
    refuses_at_once_and_serves_the_queue("unix:" + path);
    unlink(path.c_str());
    rmdir(dir);
}

TEST(Pool, StoppingTellsACooperativeHandlerToFinish) {
    TestServer t;
    ASSERT_TRUE(t.start());
    Client c(t.address());
    ASSERT_TRUE(c.send("linger\n"));
    ASSERT_NE(c.line(), "");
    ASSERT_TRUE(t.signal(SIGHUP));  // a restart makes the old generation stop
    EXPECT_EQ(c.line(), "bye stopping");
    Client d(t.address());
    ASSERT_TRUE(d.send("linger\n"));
    ASSERT_NE(d.line(), "");
    ASSERT_TRUE(t.signal(SIGTERM));  // and so does a drain
    EXPECT_EQ(d.line(), "bye stopping");
    EXPECT_TRUE(exited_zero(t.wait_exit()));
}

TEST(Pool, GracefulTimeoutBoundsTheDrain) {
    TestServer t;
    t.options.graceful_timeout = 0.5;
    ASSERT_TRUE(t.start());
    Client c(t.address());
    ASSERT_TRUE(c.send("hold\n"));
    ASSERT_NE(c.line(), "");
    ASSERT_TRUE(t.signal(SIGTERM));
    EXPECT_TRUE(exited_zero(t.wait_exit(5000)));
    EXPECT_FALSE(t.log_lines("graceful_timeout of 0.5 s ran out; killing 1 workers").empty()) << t.log();
    std::string rest;
    EXPECT_TRUE(c.until_eof(&rest));
    EXPECT_EQ(harness::ipc_objects_of(t.pid()), 0);
}

TEST(Pool, SigintStopsNow) {
    TestServer t;
    ASSERT_TRUE(t.start());
    Client c(t.address());
    ASSERT_TRUE(c.send("hold\n"));
    ASSERT_NE(c.line(), "");
    ASSERT_TRUE(t.signal(SIGINT));
    EXPECT_TRUE(exited_zero(t.wait_exit(3000)));
    std::string rest;
    EXPECT_TRUE(c.until_eof(&rest));
    EXPECT_EQ(harness::ipc_objects_of(t.pid()), 0);
}

TEST(Pool, SighupRestartsGracefullyWithoutFailedRequests) {
    TestServer t;
    t.options.start_servers = 3;
    t.options.min_spare_servers = 2;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(3));
    std::vector<pid_t> old_workers = t.workers();
    Client held(t.address());
    ASSERT_TRUE(held.send("hold\n"));
    pid_t old_busy = pid_in(held.line());
    ASSERT_TRUE(contains(old_workers, old_busy));

    std::atomic<bool> done{false};
    std::atomic<int> ok{0}, failed{0}, new_generation{0};
    std::thread load([&] {
        for (int i = 0; i < 2000 && !done; i++) {
            std::string answer = ask(t.address(), "pid");
            if (answer.empty()) failed++;
            else ok++;
            if (answer.find(" gen 2") != std::string::npos) new_generation++;
        }
    });
    ASSERT_TRUE(eventually([&] { return ok > 20; }));
    ASSERT_TRUE(t.signal(SIGHUP));
    EXPECT_TRUE(eventually([&] { return new_generation > 20; }));
    done = true;
    load.join();
    EXPECT_EQ(failed, 0);
    // The old busy worker finished its connection; every old worker left.
    EXPECT_TRUE(held.send("release\n"));
    EXPECT_EQ(held.line(), "bye");
    EXPECT_TRUE(eventually([&] { return harness::alive(old_workers).empty(); }));
    EXPECT_TRUE(t.wait_log("graceful restart: starting generation 2"));
}

TEST(Pool, SigttinAndSigttouMoveTheSpareBounds) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.min_spare_servers = 2;
    t.options.max_spare_servers = 3;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(2));
    ASSERT_TRUE(t.signal(SIGTTIN));
    EXPECT_TRUE(t.wait_log("SIGTTIN: min_spare_servers 3, max_spare_servers 4"));
    EXPECT_TRUE(t.wait_workers(3));
    ASSERT_TRUE(t.signal(SIGTTOU));
    ASSERT_TRUE(t.wait_log("SIGTTOU: min_spare_servers 2, max_spare_servers 3"));
    ASSERT_TRUE(t.signal(SIGTTOU));
    EXPECT_TRUE(t.wait_log("SIGTTOU: min_spare_servers 1, max_spare_servers 2"));
    EXPECT_TRUE(t.wait_workers(2));
    ASSERT_TRUE(t.signal(SIGTTOU));
    EXPECT_TRUE(t.wait_log("SIGTTOU: min_spare_servers is already 1"));
}

TEST(Pool, CrashingInitHookBacksOffThenRecovers) {
    std::string gate = "/tmp/prefork-test-gate-" + std::to_string(getpid());
    unlink(gate.c_str());
    TestServer t;
    t.options.start_servers = 2;
    t.options.min_spare_servers = 2;
    t.hooks.push_back([gate](prefork::Worker &) { return access(gate.c_str(), F_OK) == 0; });
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_log("next fork in 1600 ms (back-off)", 1, 8000)) << t.log();
    // A tight loop would have forked hundreds by now.
    size_t forks = t.log_lines("before it was ready").size();
    EXPECT_LE(forks, 10u);
    std::vector<std::string> waits = t.log_lines("next fork in ");
    for (size_t i = 1; i < waits.size(); i++) {
        EXPECT_GE(number_after(waits[i], "next fork in "), number_after(waits[i - 1], "next fork in "));
    }
    // The hook starts succeeding: the pool comes back by itself.
    FILE *f = fopen(gate.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fclose(f);
    EXPECT_TRUE(t.wait_log("back-off cleared", 1, 15000)) << t.log();
    EXPECT_NE(ask(t.address(), "pid"), "");
    unlink(gate.c_str());
}

TEST(Pool, ShutdownOnErrorStopsWhenAWorkerCannotStart) {
    TestServer t;
    t.options.shutdown_on_error = true;
    t.hooks.push_back([](prefork::Worker &) { return false; });
    ASSERT_TRUE(t.start());
    int status = t.wait_exit(5000);
    ASSERT_GE(status, 0) << "the server kept running";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3) << "run() should fail";
    EXPECT_FALSE(t.log_lines("a worker could not start").empty()) << t.log();
    EXPECT_EQ(harness::ipc_objects_of(t.pid()), 0);
}

// fork() failing: the server child runs as nobody with RLIMIT_NPROC 1, so
// it may not fork at all (root ignores the limit, hence the user change).
static void forbid_fork() {
    rlimit one = {1, 1};
    if (setgid(65534) != 0 || setuid(65534) != 0 || setrlimit(RLIMIT_NPROC, &one) != 0) _exit(4);
}

TEST(Pool, ForkFailureBacksOffInsteadOfLooping) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
    TestServer t;
    t.in_child = forbid_fork;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_log("fork: Resource temporarily unavailable; next try in 800 ms", 1, 8000)) << t.log();
    // A tight loop would have tried thousands of times by now.
    EXPECT_LE(t.log_lines("fork: ").size(), 8u) << t.log();
    EXPECT_TRUE(t.workers().empty());
}

TEST(Pool, ForkFailureWithShutdownOnErrorStops) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root to become another user";
    TestServer t;
    t.options.shutdown_on_error = true;
    t.in_child = forbid_fork;
    ASSERT_TRUE(t.start());
    int status = t.wait_exit(5000);
    ASSERT_GE(status, 0) << "the server kept running";
    EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 3) << "run() should fail";
    EXPECT_FALSE(t.log_lines("fork failed and shutdown_on_error is set").empty()) << t.log();
}

TEST(Pool, WorkersExitWhenTheParentIsKilled) {
    pid_t dead_parent;
    {
        TestServer t;
        t.options.start_servers = 3;
        ASSERT_TRUE(t.start());
        ASSERT_TRUE(t.wait_workers(3));
        Client held(t.address());
        ASSERT_TRUE(held.send("linger\n"));
        ASSERT_NE(held.line(), "");
        std::vector<pid_t> workers = t.workers();
        ASSERT_TRUE(t.signal(SIGKILL));
        ASSERT_GE(t.wait_exit(), 0);
        // Idle workers see the life pipe close; the busy one learns it from
        // stopping() and finishes its connection.
        EXPECT_EQ(held.line(), "bye stopping");
        EXPECT_TRUE(eventually([&] { return harness::alive(workers).empty(); }, 3000))
            << "workers outlived their parent";
        dead_parent = t.pid();
        t.expect_clean_ipc = false;
    }
    // Its semaphore set outlives it (nothing ran to remove it), unless a
    // prefork parent of this user starting meanwhile swept it already.
    bool left = harness::ipc_objects_of(dead_parent) == 1;
    TestServer next;
    ASSERT_TRUE(next.start());
    ASSERT_TRUE(next.wait_workers(2));
    EXPECT_EQ(harness::ipc_objects_of(dead_parent), 0);
    if (left)
        EXPECT_TRUE(next.wait_log("left by dead parent " + std::to_string(dead_parent))) << next.log();
    else
        std::printf("note: another process removed the stale semaphore set first\n");
}

// batch_scheduling makes the workers batch processes (Linux); the parent
// keeps the normal policy. (That a policy chosen for the server stays is
// SysWrappers.BatchSchedulingKeepsAPolicyChosenBefore.)
TEST(Pool, BatchSchedulingMakesTheWorkersBatchProcesses) {
#ifndef SCHED_BATCH
    GTEST_SKIP() << "no SCHED_BATCH here";
#else
    for (bool batch : {false, true}) {
        SCOPED_TRACE(batch ? "batch_scheduling" : "without batch_scheduling");
        TestServer t;
        t.options.start_servers = 2;
        t.options.min_spare_servers = 1;
        t.options.batch_scheduling = batch;
        ASSERT_TRUE(t.start());
        ASSERT_TRUE(t.wait_workers(2));
        // Both ready (a worker sets its policy before it is): the one
        // answering is the busy one.
        std::string sb;
        ASSERT_TRUE(eventually([&] {
            sb = ask(t.address(), "sb");
            return sb.compare(0, 15, "idle 1 busy 1 s") == 0;
        })) << sb;
        std::vector<pid_t> workers = t.workers();
        ASSERT_GE(workers.size(), 2u);
        for (pid_t w : workers)
            EXPECT_EQ(sched_getscheduler(w), batch ? SCHED_BATCH : SCHED_OTHER) << "worker " << w;
        EXPECT_EQ(sched_getscheduler(t.pid()), SCHED_OTHER);
    }
#endif
}

TEST(Pool, AWorkerKilledHoldingTheLockDoesNotWedgeThePool) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.min_spare_servers = 2;
    ASSERT_TRUE(t.start());
    Client c(t.address());
    ASSERT_TRUE(c.send("lock\n"));
    pid_t holder = pid_in(c.line());
    ASSERT_GT(holder, 0);
    ASSERT_EQ(kill(holder, SIGKILL), 0);
    // Reaping takes the lock, and so does a snapshot in another worker.
    EXPECT_TRUE(eventually([&] {
        std::vector<pid_t> now = t.workers();
        return now.size() == 2 && !contains(now, holder);
    }));
    std::string sb = ask(t.address(), "sb");
    EXPECT_EQ(sb.compare(0, 5, "idle "), 0) << sb;
}

TEST(Pool, SignalsReachWorkersByPidNeverTheProcessGroup) {
    TestServer t;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(2));
    // A bystander in the server's process group, with default dispositions:
    // any signal sent to the group would kill it.
    pid_t bystander = fork();
    if (bystander == 0) {
        setpgid(0, t.pid());
        for (;;) pause();
    }
    setpgid(bystander, t.pid());
    ASSERT_TRUE(eventually([&] { return getpgid(bystander) == t.pid(); }));
    ASSERT_TRUE(t.signal(SIGHUP));
    ASSERT_TRUE(t.wait_log("graceful restart"));
    ASSERT_TRUE(t.signal(SIGTERM));
    EXPECT_TRUE(exited_zero(t.wait_exit()));
    EXPECT_EQ(waitpid(bystander, nullptr, WNOHANG), 0) << "the bystander was signalled";
    kill(bystander, SIGKILL);
    waitpid(bystander, nullptr, 0);
}

// Through the library's own log_to_stderr: every line names its process.
TEST(Pool, WorkerLogLinesCarryTheWorkerPid) {
    TestServer t;
    t.log_through_stderr = true;
    ASSERT_TRUE(t.start());
    pid_t worker = pid_in(ask(t.address(), "log hello from a handler"));
    ASSERT_GT(worker, 0);
    ASSERT_TRUE(t.wait_log("hello from a handler"));
    std::string line = t.log_lines("hello from a handler")[0];
    EXPECT_NE(line.find("[notice] [pid " + std::to_string(worker) + "] hello from a handler"),
              std::string::npos) << line;
    std::vector<std::string> parent = t.log_lines("prefork parent ");
    ASSERT_EQ(parent.size(), 1u) << t.log();
    EXPECT_NE(parent[0].find("[pid " + std::to_string(t.pid()) + "]"), std::string::npos) << parent[0];
}

TEST(Pool, DebugScoreboardIsDumpedEverySecond) {
    TestServer t;
    t.options.start_servers = 2;
    t.options.debug_scoreboard = true;
    ASSERT_TRUE(t.start());
    EXPECT_TRUE(t.wait_log("scoreboard gen 1: 0 busy, 2 idle", 2, 5000)) << t.log();
    std::string sb = ask(t.address(), "sb");
    EXPECT_NE(sb.find("render gen 1: 1 busy, 1 idle"), std::string::npos) << sb;
}

TEST(Pool, ScoreboardCountsRequestsAcrossRecycledWorkers) {
    TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.max_clients = 1;
    t.options.max_requests_per_child = 2;
    ASSERT_TRUE(t.start());
    for (int i = 0; i < 5; i++) ASSERT_NE(ask(t.address(), "pid"), "");
    std::string sb = ask(t.address(), "sb");
    // Five earlier requests plus this one, across three workers.
    EXPECT_NE(sb.find("connections 5 requests 6"), std::string::npos) << sb;
    EXPECT_NE(sb.find("request [sb]"), std::string::npos) << sb;
}

TEST(SingleProcess, ServesInlineAndStopsOnSigterm) {
    TestServer t;
    t.options.single_process = true;
    ASSERT_TRUE(t.start());
    EXPECT_EQ(pid_in(ask(t.address(), "pid")), t.pid());
    EXPECT_EQ(pid_in(ask(t.address(), "pid")), t.pid());
    EXPECT_TRUE(t.workers().empty());
    ASSERT_TRUE(t.signal(SIGTERM));
    EXPECT_TRUE(exited_zero(t.wait_exit()));
    EXPECT_EQ(harness::ipc_objects_of(t.pid()), 0);
}

TEST(Pool, UnixSocketListenerServesAndIsRemovedAtExit) {
    std::string path = "/tmp/prefork-test-pool-" + std::to_string(getpid()) + ".sock";
    TestServer t;
    t.listen_specs = {"unix:" + path};
    ASSERT_TRUE(t.start());
    EXPECT_EQ(ask(t.address(), "pid").compare(0, 4, "pid "), 0);
    ASSERT_TRUE(t.signal(SIGTERM));
    EXPECT_TRUE(exited_zero(t.wait_exit()));
    EXPECT_NE(access(path.c_str(), F_OK), 0) << "the socket file was left behind";
}

// With a System V limit at 0 in a private IPC namespace, the server says
// which limit it hit, retries, and comes up once a helper in that namespace
// lifts the limit on the test's word.
static void retries_until_the_limit_is_lifted(const char *sysctl, const char *low,
                                              const char *high, const char *limit_name) {
    if (geteuid() != 0) GTEST_SKIP() << "needs root for a private IPC namespace";
    std::string fifo = "/tmp/prefork-test-fifo-" + std::to_string(getpid());
    unlink(fifo.c_str());
    ASSERT_EQ(mkfifo(fifo.c_str(), 0600), 0);
    TestServer t;
    t.options.ipc_retry_interval = 0.2;
    t.in_child = [=] {
        if (unshare(CLONE_NEWIPC) != 0) _exit(4);
        std::ofstream(sysctl) << low;
        if (fork() == 0) {
            int fd = open(fifo.c_str(), O_RDONLY);
            char c;
            if (fd >= 0 && read(fd, &c, 1) == 1) std::ofstream(sysctl) << high;
            _exit(0);
        }
    };
    ASSERT_TRUE(t.start());
    bool retried = t.wait_log(limit_name, 2);
    if (!retried && t.wait_exit(100) >= 0) {
        unlink(fifo.c_str());
        GTEST_SKIP() << "cannot make a private IPC namespace here";
    }
    EXPECT_TRUE(retried) << t.log();
    EXPECT_FALSE(t.log_lines("this is not about disk space; retrying in 0.2 s").empty()) << t.log();
    int fd = -1;
    ASSERT_TRUE(eventually([&] { return (fd = open(fifo.c_str(), O_WRONLY | O_NONBLOCK)) >= 0; }));
    ASSERT_EQ(write(fd, "x", 1), 1);
    close(fd);
    EXPECT_TRUE(t.wait_workers(2));
    EXPECT_EQ(ask(t.address(), "pid").compare(0, 4, "pid "), 0);
    unlink(fifo.c_str());
}

TEST(Pool, RetriesWhenSharedMemoryCannotBeHad) {
    retries_until_the_limit_is_lifted("/proc/sys/kernel/shmmni", "0", "4096", "SHMMNI");
}

TEST(Pool, RetriesWhenNoSemaphoreSetCanBeHad) {
    // kernel.sem is SEMMSL SEMMNS SEMOPM SEMMNI; SEMMNI 0 allows no set.
    retries_until_the_limit_is_lifted("/proc/sys/kernel/sem", "32000 1024000000 500 0",
                                      "32000 1024000000 500 32000", "SEMMNI");
}
