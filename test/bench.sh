#!/bin/sh
# bench.sh - HTTP throughput and worker memory of httpd next to Apache
# (mpm_prefork) and nginx (one worker).
#
# For each server, in the same run and on the same DOCROOT (a 14-byte file
# and a 100 KiB file): requests/s from wrk for keep-alive on the small file,
# "Connection: close" on the small file and keep-alive on the 100 KiB file,
# after a warm-up that lets the pool grow; and the median Private_Dirty of
# its workers (/proc/PID/smaps_rollup) idle before the load and after it.
# The server runs on one core and wrk on another (taskset). Prints a table,
# the ratios httpd/apache and httpd/nginx, and the targets (httpd >= nginx
# on all three req/s figures; httpd <= 100 KiB Private_Dirty per idle
# worker). The work is done by test/bench_http.py; this wrapper finds the
# binaries and the scratch space.
#
# Run from the repository root (`make bench` does). Environment:
#   HTTPD=path        the httpd to measure (default ./httpd)
#   APACHE2=path      apache2 binary (default: from PATH or /usr/sbin/apache2)
#   NGINX=path        nginx binary (default: from PATH or /usr/sbin/nginx)
#   WRK=path          wrk binary (default: from PATH)
#   BENCH_THREADS=1 BENCH_CONNECTIONS=50 BENCH_DURATION=5 (s per run)
#   BENCH_REPEATS=3   rounds: runs per figure, the median counts
#   BENCH_BUDGET=300  seconds the measurements may take (rounds are dropped to fit)
#   BENCH_KEEP=1      keep the scratch directory (configs and server logs)
# Missing apache2, nginx and wrk are installed with apt-get when run as
# root; a peer that is still missing or will not start is reported as n/a.
# Their system services are not used.
# Exit status: 0 when httpd was measured, 1 when it could not be.
set -u

name=bench_http
# shellcheck source=test/bench_lib.sh
. "$(dirname "$0")/bench_lib.sh"
need_tools apache2 nginx wrk
APACHE2=${APACHE2:-$(find_tool apache2)}
NGINX=${NGINX:-$(find_tool nginx)}
WRK=${WRK:-$(find_tool wrk)}

run_python bench_http.py \
    --httpd "$HTTPD" --apache "$APACHE2" --nginx "$NGINX" --wrk "$WRK" \
    --threads "${BENCH_THREADS:-1}" --connections "${BENCH_CONNECTIONS:-50}" \
    --duration "${BENCH_DURATION:-5}" --repeats "${BENCH_REPEATS:-3}" \
    --budget "${BENCH_BUDGET:-300}"
