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

here=$(cd "$(dirname "$0")" && pwd)
HTTPD=${HTTPD:-./httpd}
case $HTTPD in /*) ;; *) HTTPD=$(pwd)/$HTTPD ;; esac
if [ ! -x "$HTTPD" ]; then
    echo "bench_pool: no executable httpd at $HTTPD (run make, or set HTTPD=)" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "bench_pool: python3 is needed" >&2
    exit 1
fi

find_tool() {  # find_tool NAME: path of NAME in PATH or /usr/sbin, or nothing
    p=$(command -v "$1" 2>/dev/null) && [ -x "$p" ] && { echo "$p"; return; }
    [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"
}
# The peers come from Debian's packages; install them when missing and we can.
if [ -z "$(find_tool apache2)" ] || [ -z "$(find_tool nginx)" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench_pool: installing apache2 and nginx with apt-get"
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q apache2 nginx >/dev/null ||
            echo "bench_pool: could not install the peers; they will show as n/a" >&2
    fi
fi
APACHE2=${APACHE2:-$(find_tool apache2)}
NGINX=${NGINX:-$(find_tool nginx)}

work=$(mktemp -d "${TMPDIR:-/tmp}/bench_pool.XXXXXX") || exit 1
py_pid=
# shellcheck disable=SC2317  # called from the trap
cleanup() {
    # bench_pool.py stops every server it started; this only waits for it.
    if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
        kill -TERM "$py_pid" 2>/dev/null
        wait "$py_pid" 2>/dev/null
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench_pool: configs and logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

python3 "$here/bench_pool.py" \
    --workdir "$work" --httpd "$HTTPD" --apache "$APACHE2" --nginx "$NGINX" \
    --burst-runs "${BENCH_BURST_RUNS:-5}" --replace-runs "${BENCH_REPLACE_RUNS:-20}" \
    --apache-replace-runs "${BENCH_APACHE_REPLACE_RUNS:-5}" \
    --budget "${BENCH_BUDGET:-170}" &
py_pid=$!
wait "$py_pid"
status=$?
py_pid=
exit $status
