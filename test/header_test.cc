// header_test.cc - prefork.h must compile on its own, included first, and
// its defaults must be the ones its manual states.
#include "prefork.h"

#include <gtest/gtest.h>

TEST(Header, DefaultsMatchTheManual) {
    prefork::Options o;
    EXPECT_EQ(o.start_servers, 5);
    EXPECT_EQ(o.min_spare_servers, 5);
    EXPECT_EQ(o.max_spare_servers, 10);
    EXPECT_EQ(o.max_clients, 256);
    EXPECT_EQ(o.listen_backlog, 511);
    EXPECT_EQ(o.max_requests_per_child, 0);
    EXPECT_EQ(o.timeout, 0);
    EXPECT_EQ(o.graceful_timeout, 30);
    EXPECT_EQ(o.ipc_retry_interval, 5);
    EXPECT_EQ(o.max_requests_jitter, 0);
    EXPECT_EQ(o.max_rss_kib, 0);
    EXPECT_EQ(o.kill_grace, 2);
    EXPECT_FALSE(o.shutdown_on_error);
    EXPECT_FALSE(o.batch_scheduling);
    EXPECT_FALSE(o.single_process);
    EXPECT_FALSE(o.debug_scoreboard);
    EXPECT_EQ(o.max_clients_per_ip, 0);
    EXPECT_FALSE(o.notify_systemd);
    EXPECT_EQ(o.upgrade_timeout, 60);
    EXPECT_EQ(o.defer_accept, 0);
}

TEST(Header, HttpDefaultsMatchTheManual) {
    prefork::HttpOptions o;
    EXPECT_EQ(o.request_timeout, 10);
    EXPECT_EQ(o.keepalive_timeout, 5);
    EXPECT_EQ(o.send_timeout, 30);
    EXPECT_EQ(o.min_rate, 500);
    EXPECT_EQ(o.pressure_timeout, 0.5);
    EXPECT_EQ(o.max_body, size_t(1) << 20);
    EXPECT_EQ(o.server_name, "prefork/0.1.0");
    EXPECT_EQ(o.access_log_fd, -1);
}
