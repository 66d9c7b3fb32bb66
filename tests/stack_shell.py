"""One Django process that runs a RealStack's code snippets, as `manage.py shell -c` would.

`python -m tests.stack_shell`, in a stack's environment (RealStack.shell starts it):
Django starts once, then each JSON line {"code": ...} on stdin is run and answered with
one JSON line {"out": what it printed, "error": its traceback or null} on stdout. It
ends at the end of its stdin (or on SIGTERM). A `manage.py shell -c` costs about 3 s of
CPU to start Django, and the tests run dozens of them against live stacks.

Each snippet gets a fresh namespace, the one `shell -c` gives (that module's globals and
the models it imports automatically), and the database connections are closed after it:
the next snippet opens new ones and sees what the stack's processes wrote meanwhile, and
no connection holds the SQLite file between snippets.
"""

import contextlib
import io
import itertools
import json
import linecache
import os
import sys
import traceback


def main() -> None:
    # The replies go to the original stdout, kept on a descriptor of its own; descriptor
    # 1 then goes to stderr (the log), so nothing a snippet or a library writes there,
    # below sys.stdout, can break a reply. Snippets read /dev/null, not the requests.
    requests = os.fdopen(os.dup(0), "r", encoding="utf-8")
    replies = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    os.close(devnull)

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tickerproject.settings")
    import django

    django.setup()
    from django.core.management.commands import shell
    from django.db import connections

    namespace = {**vars(shell), **shell.Command().get_namespace(verbosity=0)}
    for number in itertools.count(1):
        line = requests.readline()
        if not line:
            return
        code = json.loads(line)["code"]
        # Registered with linecache so that a traceback shows the snippet's lines.
        filename = f"<snippet {number}>"
        linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
        out, error = io.StringIO(), None
        try:
            with contextlib.redirect_stdout(out):
                exec(compile(code, filename, "exec"), dict(namespace))
        except SystemExit as exc:
            if exc.code not in (None, 0):
                error = traceback.format_exc()
        except BaseException:
            error = traceback.format_exc()
        finally:
            connections.close_all()
            linecache.cache.pop(filename, None)
        replies.write(json.dumps({"out": out.getvalue(), "error": error}) + "\n")
        replies.flush()


if __name__ == "__main__":
    sys.exit(main())
