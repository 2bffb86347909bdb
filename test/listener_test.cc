// listener_test.cc - what Server::listen() accepts, what it refuses, and how
// the refusals read.
#include "harness.h"
#include "prefork.h"

#include <gtest/gtest.h>

#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

static std::string listen_error(const std::string &spec) {
    prefork::Server server;
    if (server.listen(spec) == 0) return "";
    return server.error();
}

TEST(Listener, PortZeroPicksAFreePortAndReportsIt) {
    prefork::Server server;
    ASSERT_EQ(server.listen("127.0.0.1:0"), 0) << server.error();
    EXPECT_GT(server.port(0), 0);
    EXPECT_EQ(server.address(0), "127.0.0.1:" + std::to_string(server.port(0)));
}

TEST(Listener, Ipv6LoopbackInBrackets) {
    prefork::Server server;
    if (server.listen("[::1]:0") != 0) GTEST_SKIP() << "no IPv6 here: " << server.error();
    EXPECT_EQ(server.address(0), "[::1]:" + std::to_string(server.port(0)));
}

TEST(Listener, MalformedSpecsAreRefusedWithTheSpecNamed) {
    const char *bad[] = {"", "http", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:-1",
                         "::1:80", "[::1]80", "[]:80", "127.0.0.1:80x", "1234567"};
    for (const char *spec : bad) {
        std::string error = listen_error(spec);
        EXPECT_NE(error.find(std::string("cannot listen on ") + spec), std::string::npos)
            << "spec '" << spec << "' gave: " << error;
    }
}

TEST(Listener, PortInUseSaysSo) {
    prefork::Server first;
    ASSERT_EQ(first.listen("127.0.0.1:0"), 0);
    std::string spec = "127.0.0.1:" + std::to_string(first.port(0));
    EXPECT_EQ(listen_error(spec), "cannot listen on " + spec + ": Address already in use");
}

TEST(Listener, UnknownHostIsAnError) {
    EXPECT_NE(listen_error("no-such-host.invalid:80").find("cannot listen on no-such-host.invalid:80"),
              std::string::npos);
}

TEST(Listener, UnixSocketReplacesAStaleFileButNotALiveServer) {
    std::string path = "/tmp/prefork-test-" + std::to_string(getpid()) + ".sock";
    {
        prefork::Server live;
        ASSERT_EQ(live.listen("unix:" + path), 0) << live.error();
        EXPECT_EQ(live.address(0), "unix:" + path);
        EXPECT_NE(listen_error("unix:" + path).find("another server is listening"), std::string::npos);
    }
    // The first server is gone but its socket file is still there: stale.
    struct stat st;
    ASSERT_EQ(stat(path.c_str(), &st), 0);
    prefork::Server again;
    EXPECT_EQ(again.listen("unix:" + path), 0) << again.error();
    unlink(path.c_str());
}

TEST(Listener, UnixPathThatIsNotASocketIsRefused) {
    std::string path = "/tmp/prefork-test-" + std::to_string(getpid()) + ".file";
    FILE *f = fopen(path.c_str(), "w");
    ASSERT_NE(f, nullptr);
    fclose(f);
    EXPECT_NE(listen_error("unix:" + path).find("exists and is not a socket"), std::string::npos);
    unlink(path.c_str());
    EXPECT_NE(listen_error("unix:" + std::string(200, 'x')).find("the path must be"), std::string::npos);
}

TEST(Listener, AdoptsAnOpenListeningSocketOnly) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    ASSERT_GE(fd, 0);
    prefork::Server server;
    EXPECT_EQ(server.listen_fd(fd), -1);
    EXPECT_EQ(server.error(), "fd " + std::to_string(fd) + " is not a listening socket");
    sockaddr_in in{};
    in.sin_family = AF_INET;
    in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ASSERT_EQ(bind(fd, reinterpret_cast<sockaddr *>(&in), sizeof in), 0);
    ASSERT_EQ(listen(fd, 8), 0);
    EXPECT_EQ(server.listen_fd(fd), 0) << server.error();
    EXPECT_GT(server.port(0), 0);
}

TEST(Listener, RunRefusesWithoutListenerOrHandler) {
    prefork::Server server;
    EXPECT_EQ(server.run(), -1);
    EXPECT_EQ(server.error(), "no listener: call listen() before run()");
    ASSERT_EQ(server.listen("127.0.0.1:0"), 0);
    EXPECT_EQ(server.run(), -1);
    EXPECT_EQ(server.error(), "no connection handler: call on_connection() before run()");
    prefork::Options bad;
    bad.max_clients = 0;
    prefork::Server refused(bad);
    ASSERT_EQ(refused.listen("127.0.0.1:0"), 0);
    refused.on_connection([](prefork::Worker &, int) {});
    EXPECT_EQ(refused.run(), -1);
    EXPECT_EQ(refused.error().compare(0, 11, "max_clients"), 0) << refused.error();
}

// With defer_accept, a client that connects and says nothing stays in the
// kernel: the only worker is free for one that speaks. (Without it, the
// silent client would hold that worker for the command reader's 10 s.)
TEST(Listener, DeferAcceptKeepsASilentClientAwayFromTheWorkers) {
    harness::TestServer t;
    t.options.start_servers = 1;
    t.options.min_spare_servers = 1;
    t.options.max_spare_servers = 1;
    t.options.max_clients = 1;
    t.options.defer_accept = 5;
    ASSERT_TRUE(t.start());
    ASSERT_TRUE(t.wait_workers(1));
    harness::Client silent(t.address());
    ASSERT_TRUE(silent.connected());
    std::string pid = harness::ask(t.address(), "pid", 2000);
    EXPECT_FALSE(pid.empty()) << "the silent connection took the only worker";
    ASSERT_TRUE(silent.send("pid\n"));
    EXPECT_EQ(silent.line(3000) + "\n", pid);  // once it speaks, it is served
}
