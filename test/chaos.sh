#!/bin/sh
# chaos.sh - httpd under fire (`make chaos`): killed workers, restart
# storms, a drain under load, slow clients, leaks. The scenarios and what
# each checks are described in test/chaos.py, which does the work; this
# wrapper finds the tools and the scratch space. Loopback only; every load
# is bounded in time, the whole run takes a few minutes.
#
# Run from the repository root. Environment:
#   HTTPD=path        the httpd to test (default ./httpd)
#   WRK=path          wrk binary (default: from PATH)
#   CHAOS_ONLY=a,b    run only these scenarios
#   BENCH_KEEP=1      keep the scratch directory (server logs, valgrind log)
# Missing wrk, curl and valgrind are installed with apt-get when run as root.
# Exit status: 0 when every scenario passed.
set -u

name=chaos
# shellcheck source=test/bench_lib.sh
. "$(dirname "$0")/bench_lib.sh"
need_tools wrk curl valgrind
WRK=${WRK:-$(find_tool wrk)}

run_python chaos.py \
    --httpd "$HTTPD" --wrk "$WRK" --chaos-server "${CHAOS_SERVER:-build/chaos_server}" \
    --only "${CHAOS_ONLY:-}"
