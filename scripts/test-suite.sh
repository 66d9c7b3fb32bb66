#!/usr/bin/env bash
# make test's pytest run, in three parts at once, each against an embedded Redis of its own
# (python -m tickerproject.stack test):
#
# 1. the tests marked `serial` (tests/conftest.py lists them): they assert timings or load
#    figures, so they run one at a time and at normal CPU priority;
# 2. the `browser` tests (real Chromium) in a process of their own (Playwright's sync API
#    gets a process to itself), also at normal priority: a page starved of the CPU misses
#    what it waits for;
# 3. most of the suite in TEST_WORKERS processes (a test file per process at a time, so a
#    file's shared stack stays in one), at a low CPU priority (nice 10),
#
# so the last uses what the first two leave: they wait on sockets, timers, pages and
# subprocesses most of the time, and whenever they want the CPU they get it first. Each part runs in a session of its own
# (setsid): Ctrl-C or a failure ends every process of every part (launchers, Redis,
# pytest, stacks, Chromium), and with the kernel's autogroup scheduling the low priority is
# given to the niced part's whole session (/proc/PID/autogroup), which plain nice alone
# is not across sessions.
#
# The parallel part's output is shown as it runs; the other two parts' once they end, so
# nothing interleaves. Every part runs even when another failed; the exit status is
# non-zero if any failed. Exit code 5 is "nothing selected", for a PYTEST_ARGS that picks
# tests of some parts only.
set -u
cd "$(dirname "$0")/.."

BIN=.venv/bin
# Shell words, quotes included, as make passed them: PYTEST_ARGS="-m 'not slow'".
eval "ARGS=(${PYTEST_ARGS:-})"
passed() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }

# lane NICE pytest-args...: the launcher and pytest in a session of their own, at NICE.
# Run as `lane ... &`: exec keeps the background job's pid for setsid, which (not being a
# process group leader) makes it the session's leader, so `kill -- -PID` ends the session.
lane() {
    local nice=$1
    shift
    exec setsid bash -c 'echo "$0" >/proc/self/autogroup 2>/dev/null; exec nice -n "$0" "$@"' \
        "$nice" "$BIN/python" -m tickerproject.stack test -- "$BIN/python" -m pytest "$@" \
        ${ARGS[@]+"${ARGS[@]}"}
}

mkdir -p var
serial_log=var/test-serial.log
browser_log=var/test-browser.log
started=$SECONDS
lane 0 -m "serial and not browser" >"$serial_log" 2>&1 &
serial_pid=$!
lane 0 -m browser >"$browser_log" 2>&1 &
browser_pid=$!
lane 10 -n "${TEST_WORKERS:-2}" --dist loadfile -m "not serial and not browser" &
parallel_pid=$!
trap 'for pid in $serial_pid $browser_pid $parallel_pid; do kill -- "-$pid" 2>/dev/null; done' EXIT
trap 'exit 130' INT TERM HUP  # so that the EXIT trap ends the parts

wait "$parallel_pid"
parallel=$?
echo "test-suite: parallel part took $((SECONDS - started)) s (exit $parallel)"
wait "$browser_pid"
browser=$?
echo "test-suite: browser part (beside it) ended after $((SECONDS - started)) s (exit $browser):"
cat "$browser_log"
wait "$serial_pid"
serial=$?
echo "test-suite: serial part (beside them, at normal priority) ended after $((SECONDS - started)) s (exit $serial):"
cat "$serial_log"
trap - EXIT
echo "test-suite: all parts took $((SECONDS - started)) s"

failed=0
for part in parallel browser serial; do
    passed "${!part}" || { echo "test-suite: the $part part failed (exit ${!part})"; failed=1; }
done
exit "$failed"
