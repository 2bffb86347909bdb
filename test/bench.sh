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
#   BENCH_REPEATS=3   runs per figure, the median counts
#   BENCH_BUDGET=230  seconds the measurements may take (repeats are dropped to fit)
#   BENCH_KEEP=1      keep the scratch directory (configs and server logs)
# Missing apache2, nginx and wrk are installed with apt-get when run as
# root; a peer that is still missing or will not start is reported as n/a.
# Their system services are not used.
# Exit status: 0 when httpd was measured, 1 when it could not be.
set -u

here=$(cd "$(dirname "$0")" && pwd)
HTTPD=${HTTPD:-./httpd}
case $HTTPD in /*) ;; *) HTTPD=$(pwd)/$HTTPD ;; esac
if [ ! -x "$HTTPD" ]; then
    echo "bench: no executable httpd at $HTTPD (run make, or set HTTPD=)" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "bench: python3 is needed" >&2
    exit 1
fi

find_tool() {  # find_tool NAME: path of NAME in PATH or /usr/sbin, or nothing
    p=$(command -v "$1" 2>/dev/null) && [ -x "$p" ] && { echo "$p"; return; }
    [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"
}
# The peers and the load generator come from Debian's packages; install
# the missing ones when we can.
missing=
for tool in apache2 nginx wrk; do
    [ -z "$(find_tool $tool)" ] && missing="$missing $tool"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "bench: installing$missing with apt-get"
        # shellcheck disable=SC2086  # one word per package
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null ||
            echo "bench: could not install$missing" >&2
    else
        echo "bench: missing$missing (not root, or no apt-get)" >&2
    fi
fi
APACHE2=${APACHE2:-$(find_tool apache2)}
NGINX=${NGINX:-$(find_tool nginx)}
WRK=${WRK:-$(find_tool wrk)}

work=$(mktemp -d "${TMPDIR:-/tmp}/bench_http.XXXXXX") || exit 1
py_pid=
# shellcheck disable=SC2317  # called from the trap
cleanup() {
    # bench_http.py stops every server it started; this only waits for it.
    if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
        kill -TERM "$py_pid" 2>/dev/null
        wait "$py_pid" 2>/dev/null
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "bench: configs and logs kept in $work"
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

python3 "$here/bench_http.py" \
    --workdir "$work" --httpd "$HTTPD" --apache "$APACHE2" --nginx "$NGINX" --wrk "$WRK" \
    --threads "${BENCH_THREADS:-1}" --connections "${BENCH_CONNECTIONS:-50}" \
    --duration "${BENCH_DURATION:-5}" --repeats "${BENCH_REPEATS:-3}" \
    --budget "${BENCH_BUDGET:-230}" &
py_pid=$!
wait "$py_pid"
status=$?
py_pid=
exit $status
