// options_test.cc - check_options(): the seed's two normalisations, logged,
// and a clear error naming the option for everything else.
#include "prefork.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

using prefork::check_options;
using prefork::Options;

TEST(Options, DefaultsAreAccepted) {
    Options o;
    std::vector<std::string> notes;
    EXPECT_EQ(check_options(o, &notes), "");
    EXPECT_TRUE(notes.empty());
}

TEST(Options, StartServersIsClampedToMaxClients) {
    Options o;
    o.start_servers = 50;
    o.max_clients = 8;
    std::vector<std::string> notes;
    EXPECT_EQ(check_options(o, &notes), "");
    EXPECT_EQ(o.start_servers, 8);
    ASSERT_EQ(notes.size(), 1u);
    EXPECT_NE(notes[0].find("start_servers 50"), std::string::npos) << notes[0];
}

TEST(Options, MaxSpareBelowMinSpareBecomesMinPlusOne) {
    Options o;
    o.min_spare_servers = 7;
    o.max_spare_servers = 3;
    std::vector<std::string> notes;
    EXPECT_EQ(check_options(o, &notes), "");
    EXPECT_EQ(o.max_spare_servers, 8);
    ASSERT_EQ(notes.size(), 1u);
    EXPECT_NE(notes[0].find("max_spare_servers 3"), std::string::npos) << notes[0];
}

TEST(Options, EqualSparesAreLeftAlone) {
    Options o;
    o.min_spare_servers = 4;
    o.max_spare_servers = 4;
    EXPECT_EQ(check_options(o, nullptr), "");
    EXPECT_EQ(o.max_spare_servers, 4);
}

struct BadOption {
    const char *name;
    void (*spoil)(Options &);
};

static const BadOption bad_options[] = {
    {"start_servers", [](Options &o) { o.start_servers = -1; }},
    {"min_spare_servers", [](Options &o) { o.min_spare_servers = 0; }},
    {"max_spare_servers", [](Options &o) { o.max_spare_servers = -3; }},
    {"max_clients", [](Options &o) { o.max_clients = 0; }},
    {"max_clients", [](Options &o) { o.max_clients = 1000000; }},
    {"listen_backlog", [](Options &o) { o.listen_backlog = 0; }},
    {"max_requests_per_child", [](Options &o) { o.max_requests_per_child = -1; }},
    {"max_requests_jitter", [](Options &o) { o.max_requests_jitter = -5; }},
    {"max_requests_jitter", [](Options &o) { o.max_requests_jitter = 5; }},
    {"max_rss_kib", [](Options &o) { o.max_rss_kib = -1; }},
    {"timeout", [](Options &o) { o.timeout = -1; }},
    {"timeout", [](Options &o) { o.timeout = NAN; }},
    {"graceful_timeout", [](Options &o) { o.graceful_timeout = INFINITY; }},
    {"kill_grace", [](Options &o) { o.kill_grace = -0.5; }},
    {"ipc_retry_interval", [](Options &o) { o.ipc_retry_interval = 0; }},
};

TEST(Options, BadValuesAreRejectedByName) {
    for (const BadOption &bad : bad_options) {
        Options o;
        bad.spoil(o);
        Options before = o;
        std::string error = check_options(o, nullptr);
        EXPECT_EQ(error.compare(0, strlen(bad.name), bad.name), 0)
            << "expected an error naming " << bad.name << ", got: " << error;
        EXPECT_EQ(o.start_servers, before.start_servers);
    }
}
