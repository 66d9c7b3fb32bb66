"""RealStack.shell: a stack's code snippets run in one Django process (tests/stack_shell.py).

A real stack's database (`release`, no web server, worker or beat) and a real runner
process over real pipes; one for the module, as a test module's stack has, since each
runner's start costs about 3 s of CPU.
"""

import contextlib
import os
import sqlite3

import pytest

from tests.realstack import RealStack

pytestmark = [pytest.mark.e2e]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = RealStack(tmp_path_factory.mktemp("shell-stack"))
    stack.prepare_database()
    try:
        yield stack
    finally:
        stack.stop_all()


def test_a_snippet_returns_what_it_printed_and_keeps_no_state(stack):
    assert stack.shell("print('hello')\nprint(2 + 2)") == "hello\n4\n"
    pid = stack.procs["shell"].pid
    # The models `manage.py shell -c` imports are there; names a snippet made are not.
    assert stack.shell("made = 1\nprint(User.objects.count())") == "0\n"
    assert stack.shell("print('made' in globals())") == "False\n"
    assert stack.procs["shell"].pid == pid  # one process for both


def test_a_raising_snippet_fails_with_its_traceback_and_the_next_one_runs(stack):
    with pytest.raises(AssertionError) as raised:
        stack.shell("print('before')\nraise ValueError('boom')")
    message = str(raised.value)
    assert "ValueError: boom" in message
    assert "raise ValueError('boom')" in message  # the snippet's line in the traceback
    assert "before" in message
    assert stack.shell("print('after')") == "after\n"


def test_another_process_write_is_seen_and_the_database_is_not_held(stack):
    database = stack.workdir / "db.sqlite3"
    seen = "print(*Group.objects.filter(name='from-outside').values_list('name', flat=True))"
    assert stack.shell(seen) == "\n"
    with contextlib.closing(sqlite3.connect(database)) as db, db:
        db.execute("INSERT INTO auth_group (name) VALUES ('from-outside')")
    assert stack.shell(seen) == "from-outside\n"
    # A snippet that leaves a write transaction open: the runner closes its connection
    # (a rollback), so another process may write at once.
    stack.shell(
        "from django.db import transaction\n"
        "transaction.set_autocommit(False)\n"
        "Group.objects.create(name='left-open')\n"
    )
    with contextlib.closing(sqlite3.connect(database, timeout=0)) as db:
        db.execute("BEGIN IMMEDIATE")  # "database is locked" if the runner held it
        db.rollback()
    assert stack.shell("print(Group.objects.filter(name='left-open').exists())") == "False\n"


def test_a_dead_runner_is_replaced_one_ends_with_its_stdin_and_none_outlives_stop(stack):
    stack.shell("pass")
    proc = stack.procs["shell"]
    proc.kill()
    proc.wait()
    assert stack.shell("print('again')") == "again\n"
    replacement = stack.procs["shell"]
    assert replacement.pid != proc.pid
    # A test process that dies without stop_all leaves no runner behind.
    replacement.stdin.close()
    assert replacement.wait(timeout=30) == 0
    assert stack.shell("print('third')") == "third\n"
    last = stack.procs["shell"]
    stack.stop_all()
    assert "shell" not in stack.procs
    assert last.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.kill(last.pid, 0)
