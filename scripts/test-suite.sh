#!/usr/bin/env bash
# make test's pytest run, in three parts, each against an embedded Redis of its own
# (python -m tickerproject.stack test):
#
# 1. most of the suite in TEST_WORKERS (4) processes, a test file per process at a time
#    (a file's shared stack stays in one), the slowest files first (tests/conftest.py's
#    SLOW_FIRST), and beside it
# 2. the `browser` tests (real Chromium) in a process of their own: Playwright's sync API
#    gets a process to itself, and the two share the machine instead of waiting for each
#    other (the browser tests spend most of their time waiting on the page);
# 3. then the tests marked `serial` (tests/conftest.py lists them) in SERIAL_WORKERS (2)
#    processes, a file per process at a time, with nothing else running: they assert
#    timings or load figures, and each uses about a third of a core.
#
# Four processes, not two: most tests wait (on stacks, sockets, timers), and with two
# the part kept the 2-core machine at 1.2 cores on average (issue 19's note). Running the
# serial part beside the others (at a higher CPU priority) was tried: the machine stayed
# saturated and timing-sensitive tests failed. Each part runs in a session of its own
# (setsid), so that Ctrl-C or a failure ends every process of it (the launcher, its Redis,
# pytest, stacks, Chromium). The browser part's output is shown once it ends, so the two
# do not interleave. Every part runs even when one before it failed; the exit status is
# non-zero if any failed. Exit code 5 is "nothing selected", for a PYTEST_ARGS that picks
# tests of some parts only.
set -u
cd "$(dirname "$0")/.."

BIN=.venv/bin
# Shell words, quotes included, as make passed them: PYTEST_ARGS="-m 'not slow'".
eval "ARGS=(${PYTEST_ARGS:-})"
passed() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }

# part pytest-args...: the launcher and pytest in a session of their own. Run as
# `part ... &`: exec keeps the background job's pid for setsid, which (not being a process
# group leader) makes it the session's leader, so `kill -- -PID` ends the session.
part() {
    exec setsid "$BIN/python" -m tickerproject.stack test -- "$BIN/python" -m pytest "$@" \
        ${ARGS[@]+"${ARGS[@]}"}
}

mkdir -p var
browser_log=var/test-browser.log
pids=()
trap 'for pid in "${pids[@]}"; do kill -- "-$pid" 2>/dev/null; done' EXIT
trap 'exit 130' INT TERM HUP  # so that the EXIT trap ends the parts

started=$SECONDS
part -m browser >"$browser_log" 2>&1 &
browser_pid=$!
pids+=("$browser_pid")
part -n "${TEST_WORKERS:-4}" --dist loadfile --no-loadscope-reorder -m "not serial and not browser" &
parallel_pid=$!
pids+=("$parallel_pid")
wait "$parallel_pid"
parallel=$?
echo "test-suite: parallel part took $((SECONDS - started)) s (exit $parallel)"
wait "$browser_pid"
browser=$?
echo "test-suite: browser part (beside it) ended after $((SECONDS - started)) s (exit $browser):"
cat "$browser_log"

started=$SECONDS
part -n "${SERIAL_WORKERS:-2}" --dist loadfile --no-loadscope-reorder -m "serial and not browser" &
serial_pid=$!
pids+=("$serial_pid")
wait "$serial_pid"
serial=$?
echo "test-suite: serial part took $((SECONDS - started)) s (exit $serial)"
trap - EXIT

failed=0
for p in parallel browser serial; do
    passed "${!p}" || { echo "test-suite: the $p part failed (exit ${!p})"; failed=1; }
done
exit "$failed"
