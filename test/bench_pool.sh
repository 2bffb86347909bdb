#!/bin/sh
# bench_pool.sh - pool reaction of httpd next to Apache (prefork) and nginx.
#
# Measures, for each server in the same run, how long a burst of 64
# connections that each hold a worker takes to be accepted, and how long a
# SIGKILLed worker takes to be replaced; prints medians, ratios and the
# targets (burst <= 200 ms, replacement <= 10 ms). The work is done by
# test/bench_pool.py; this wrapper finds the binaries and the scratch space.
#
# Run from the repository root (`make bench` does). Environment:
#   HTTPD=path        the httpd to measure (default ./httpd)
#   APACHE2=path      apache2 binary (default: from PATH or /usr/sbin/apache2)
#   NGINX=path        nginx binary (default: from PATH or /usr/sbin/nginx)
#   BENCH_BURST_RUNS=5 BENCH_REPLACE_RUNS=20 BENCH_APACHE_REPLACE_RUNS=5
#   BENCH_BUDGET=170  seconds the whole run may take (repeats are dropped to fit)
#   BENCH_KEEP=1      keep the scratch directory (configs and server logs)
# Missing peers are installed with apt-get when run as root; a peer that is
# still missing or will not start is reported as n/a. Their system services
# are not used.
# Exit status: 0 when httpd was measured, 1 when it could not be.
set -u

name=bench_pool
# shellcheck source=test/bench_lib.sh
. "$(dirname "$0")/bench_lib.sh"
need_tools apache2 nginx
APACHE2=${APACHE2:-$(find_tool apache2)}
NGINX=${NGINX:-$(find_tool nginx)}

run_python bench_pool.py \
    --httpd "$HTTPD" --apache "$APACHE2" --nginx "$NGINX" \
    --burst-runs "${BENCH_BURST_RUNS:-5}" --replace-runs "${BENCH_REPLACE_RUNS:-20}" \
    --apache-replace-runs "${BENCH_APACHE_REPLACE_RUNS:-5}" \
    --budget "${BENCH_BUDGET:-170}"
