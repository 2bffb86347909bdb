# shellcheck shell=sh
# bench_lib.sh - what test/bench.sh and test/bench_pool.sh share: finding
# httpd and the peers, installing missing peers, a scratch directory, and
# running the Python side so that an interrupt still stops every server.
# Sourced with $name set (the prefix of every message).
name=${name:?set name before sourcing bench_lib.sh}

here=$(cd "$(dirname "$0")" && pwd)
HTTPD=${HTTPD:-./httpd}
case $HTTPD in /*) ;; *) HTTPD=$(pwd)/$HTTPD ;; esac
if [ ! -x "$HTTPD" ]; then
    echo "$name: no executable httpd at $HTTPD (run make, or set HTTPD=)" >&2
    exit 1
fi
if ! command -v python3 >/dev/null 2>&1; then
    echo "$name: python3 is needed" >&2
    exit 1
fi

find_tool() {  # find_tool NAME: path of NAME in PATH or /usr/sbin, or nothing
    p=$(command -v "$1" 2>/dev/null) && [ -x "$p" ] && { echo "$p"; return; }
    [ -x "/usr/sbin/$1" ] && echo "/usr/sbin/$1"
}

# need_tools TOOL...: installs the missing ones from Debian's packages
# (named as the tools) when run as root with apt-get; says so otherwise.
need_tools() {
    missing=
    for tool in "$@"; do
        [ -z "$(find_tool "$tool")" ] && missing="$missing $tool"
    done
    [ -z "$missing" ] && return
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "$name: installing$missing with apt-get"
        # shellcheck disable=SC2086  # one word per package
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing >/dev/null ||
            echo "$name: could not install$missing; missing peers show as n/a" >&2
    else
        echo "$name: missing$missing (not root, or no apt-get); missing peers show as n/a" >&2
    fi
}

# run_python SCRIPT ARG...: runs test/SCRIPT with --workdir (a fresh scratch
# directory, removed afterwards unless BENCH_KEEP=1) and the arguments;
# exits with its status.
run_python() {
    script=$1
    shift
    work=$(mktemp -d "${TMPDIR:-/tmp}/$name.XXXXXX") || exit 1
    py_pid=
    trap cleanup EXIT
    trap 'exit 130' INT TERM HUP
    python3 "$here/$script" --workdir "$work" "$@" &
    py_pid=$!
    wait "$py_pid"
    status=$?
    py_pid=
    exit $status
}

# shellcheck disable=SC2317  # called from the trap
cleanup() {
    # The Python side stops every server it started; this only waits for it.
    if [ -n "$py_pid" ] && kill -0 "$py_pid" 2>/dev/null; then
        kill -TERM "$py_pid" 2>/dev/null
        wait "$py_pid" 2>/dev/null
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        echo "$name: configs and logs kept in $work"
    else
        rm -rf "$work"
    fi
}
