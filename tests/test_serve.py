"""tickerproject.serve: the worker's supervision, without a broker (the launcher's other
parts are exercised by every real stack, tests/realstack.py)."""

import pytest
from celery.signals import worker_shutting_down

from tickerproject import serve


class Exec(Exception):
    """os.execv, replaced: the test process is not replaced."""


@pytest.fixture
def worker(monkeypatch):
    """run_worker with Celery replaced by ``celery.run`` and a clock the test moves."""

    class Fake:
        ran = 0.0
        exit_code: object = 1
        signal: str | None = None
        execs: list[list[str]] = []

        def run(self, argv):
            if self.signal:
                worker_shutting_down.send(sender="w@h", sig=self.signal, how="Warm", exitcode=1)
            self.now += self.ran
            raise SystemExit(self.exit_code)

    fake = Fake()
    fake.now = 100.0
    fake.execs = []

    def execv(path, args):
        fake.execs.append([path, *args[1:]])
        raise Exec

    monkeypatch.setattr(serve, "run_in_process", fake.run)
    monkeypatch.setattr(serve.time, "monotonic", lambda: fake.now)
    monkeypatch.setattr(serve.os, "execv", execv)
    monkeypatch.setattr(serve.logging, "shutdown", lambda: None)
    return fake


AGAIN = ["/venv/bin/python", "-m", "tickerproject.serve", "worker"]


def test_a_worker_celery_gave_up_on_is_started_again_in_a_fresh_image(worker, caplog):
    worker.ran = 42.0
    with pytest.raises(Exec):
        serve.run_worker(["celery", "worker"], again=AGAIN)
    assert worker.execs == [["/venv/bin/python", "-m", "tickerproject.serve", "worker"]]
    assert "the Celery worker stopped on an error after 42 s (exit 1); starting it again" in (
        caplog.text
    )


@pytest.mark.parametrize(
    ("ran", "exit_code", "signal"),
    [
        (42.0, 1, "SIGQUIT"),  # a cold shutdown asked for: exit 1 too, but on a signal
        (42.0, 0, "SIGTERM"),  # a warm shutdown
        (42.0, 0, None),
        (3.0, 1, None),  # it failed to start (a broker never reached): the status stands
    ],
)
def test_a_worker_stopped_on_purpose_or_at_its_start_is_not_started_again(
    worker, ran, exit_code, signal
):
    worker.ran, worker.exit_code, worker.signal = ran, exit_code, signal
    with pytest.raises(SystemExit) as ended:
        serve.run_worker(["celery", "worker"], again=AGAIN)
    assert ended.value.code == exit_code
    assert worker.execs == []
