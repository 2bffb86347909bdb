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
    EXPECT_FALSE(o.single_process);
    EXPECT_FALSE(o.debug_scoreboard);
}
