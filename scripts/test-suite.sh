#!/usr/bin/env bash
# make test's pytest run, in three parts, each against an embedded Redis of its own
# (python -m tickerproject.stack test):
#
# 1. most of the suite in TEST_WORKERS processes (a test file per process at a time, so a
#    file's shared stack stays in one), and beside it
# 2. the `browser` tests (real Chromium) in a process of their own: Playwright's sync API
#    gets a process to itself, and the two share the machine instead of waiting for each
#    other (the browser tests spend most of their time waiting on the page);
# 3. then the tests marked `serial` alone: they assert timings or load figures
#    (tests/conftest.py lists them), so nothing else runs meanwhile.
#
# The browser part's output is shown once it ends, so the two do not interleave. Every
# part runs even when one before it failed; the exit status is non-zero if any failed.
# Exit code 5 is "nothing selected", for a PYTEST_ARGS that picks tests of some parts only.
set -u
cd "$(dirname "$0")/.."

BIN=.venv/bin
# Shell words, quotes included, as make passed them: PYTEST_ARGS="-m 'not slow'".
eval "ARGS=(${PYTEST_ARGS:-})"
run() { "$BIN/python" -m tickerproject.stack test -- "$BIN/python" -m pytest "$@" ${ARGS[@]+"${ARGS[@]}"}; }
passed() { [ "$1" -eq 0 ] || [ "$1" -eq 5 ]; }

mkdir -p var
browser_log=var/test-browser.log
# In a process group of its own (setsid), so that Ctrl-C or a failure here ends the
# whole browser part (the launcher, its Redis, pytest, Chromium), not the launcher alone.
setsid "$BIN/python" -m tickerproject.stack test -- "$BIN/python" -m pytest -m browser \
    ${ARGS[@]+"${ARGS[@]}"} >"$browser_log" 2>&1 &
browser_pid=$!
trap 'kill -- "-$browser_pid" 2>/dev/null' EXIT

started=$SECONDS
run -n "${TEST_WORKERS:-2}" --dist loadfile -m "not serial and not browser"
parallel=$?
echo "test-suite: parallel part took $((SECONDS - started)) s (exit $parallel)"
wait "$browser_pid"
browser=$?
trap - EXIT
echo "test-suite: browser part (beside it) ended after $((SECONDS - started)) s (exit $browser):"
cat "$browser_log"

started=$SECONDS
run -m "serial and not browser"
serial=$?
echo "test-suite: serial part took $((SECONDS - started)) s (exit $serial)"

failed=0
for part in parallel browser serial; do
    passed "${!part}" || { echo "test-suite: the $part part failed (exit ${!part})"; failed=1; }
done
exit "$failed"
