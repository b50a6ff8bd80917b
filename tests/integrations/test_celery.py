from __future__ import annotations

import celery
import pytest

import llmguard
from llmguard import Guard, Observe
from llmguard.integrations.celery import HEADER, ContextTask, context_of
from llmguard.testing import FakeProvider, capture_records


@pytest.fixture
def app() -> celery.Celery:
    app = celery.Celery("llmguard-tests", set_as_current=False)
    app.conf.task_always_eager = True
    app.conf.task_eager_propagates = True
    return app


def test_an_eager_task_records_the_callers_user_and_endpoint(app: celery.Celery) -> None:
    guard = Guard(FakeProvider(["summary"]), [Observe()], model="m")

    @app.task(base=ContextTask)
    def summarise(text: str) -> str:
        return guard.sync.complete(user=text).text

    with capture_records() as records:
        with llmguard.context(user="alice", endpoint="/reports", tags=["nightly"]):
            result = summarise.delay("a long report")
        assert llmguard.current_context().user is None  # restored only inside the task
        assert result.get() == "summary"
    (record,) = records
    assert (record.user, record.endpoint, record.tags) == ("alice", "/reports", ("nightly",))


def test_the_snapshot_travels_in_the_headers_and_an_explicit_one_wins(app: celery.Celery) -> None:
    seen: list[object] = []

    @app.task(base=ContextTask, bind=True)
    def probe(self: celery.Task) -> None:
        seen.append((context_of(self.request), llmguard.current_context().user))

    with llmguard.context(user="alice"):
        probe.apply_async()
        probe.apply_async(headers={HEADER: {"user": "bob", "endpoint": "/x"}})
    probe.apply_async()
    assert seen[0] == ({"user": "alice", "tenant": None, "endpoint": None, "tags": []}, "alice")
    assert seen[1] == ({"user": "bob", "endpoint": "/x"}, "bob")
    assert seen[2] == ({"user": None, "tenant": None, "endpoint": None, "tags": []}, None)


def test_without_a_snapshot_the_task_runs_as_is() -> None:
    class Bare:
        headers = None

    assert context_of(Bare()) is None
