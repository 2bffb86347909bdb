#!/bin/sh
# chaos.sh - httpd under fire (`make chaos`): killed workers, restart
# storms, a drain under load, slow clients (by hand and from slowhttptest,
# next to nginx), leaks, crashing and throwing handlers, a stop with a full
# listen queue, restarts and upgrades behind haproxy, the status page read
# by Prometheus' apache_exporter. The scenarios and what
# each checks are described in test/chaos.py, which does the work; this
# wrapper finds the tools and the scratch space. Loopback only; every load
# is bounded in time, the whole run takes a few minutes.
#
# Run from the repository root. Environment:
#   HTTPD=path        the httpd to test (default ./httpd)
#   WRK=path          wrk binary (default: from PATH)
#   NGINX=path HAPROXY=path SLOWHTTPTEST=path APACHE_EXPORTER=path
#                     the peers (default: from PATH or /usr/sbin)
#   CHAOS_ONLY=a,b    run only these scenarios
#   CHAOS_ATTACK_S=30 length of each slowhttptest attack (shorter while developing)
#   BENCH_KEEP=1      keep the scratch directory (server logs, valgrind log,
#                     slowhttptest's reports, haproxy's config)
# Missing wrk, curl, valgrind, slowhttptest, haproxy, nginx and
# prometheus-apache-exporter are installed
# with apt-get when run as root; a scenario whose tool is still missing is
# skipped (nginx, only a comparison, shows as n/a). Their system services
# are not used.
# Exit status: 0 when every scenario passed.
set -u

name=chaos
# shellcheck source=test/bench_lib.sh
. "$(dirname "$0")/bench_lib.sh"
need_tools wrk curl valgrind slowhttptest haproxy nginx prometheus-apache-exporter
WRK=${WRK:-$(find_tool wrk)}
NGINX=${NGINX:-$(find_tool nginx)}
HAPROXY=${HAPROXY:-$(find_tool haproxy)}
SLOWHTTPTEST=${SLOWHTTPTEST:-$(find_tool slowhttptest)}
APACHE_EXPORTER=${APACHE_EXPORTER:-$(find_tool prometheus-apache-exporter)}

run_python chaos.py \
    --httpd "$HTTPD" --wrk "$WRK" --chaos-server "${CHAOS_SERVER:-build/chaos_server}" \
    --nginx "$NGINX" --haproxy "$HAPROXY" --slowhttptest "$SLOWHTTPTEST" \
    --apache-exporter "$APACHE_EXPORTER" \
    --only "${CHAOS_ONLY:-}"
