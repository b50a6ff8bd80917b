from __future__ import annotations

import math
from typing import Any

import flask
import pytest

from llmguard import CallContext, Guard, Observe
from llmguard.integrations.flask import init_app, stream_response
from llmguard.testing import FakeProvider, FakeReply, capture_records

from ._layers import Refuse, budget_refusal

HELLO_FRAMES = (
    b'data: {"type":"text","text":"Hell"}\n\n'
    b'data: {"type":"text","text":"o!"}\n\n'
    b'data: {"type":"usage","input_tokens":4,"output_tokens":2,"cached_input_tokens":0,"reasoning_tokens":0,"estimated":false}\n\n'
    b'data: {"type":"finish","reason":"stop"}\n\n'
    b"data: [DONE]\n\n"
)


def make_app(*replies: Any, layers: tuple[Any, ...] = ()) -> tuple[flask.Flask, FakeProvider]:
    fake = FakeProvider(list(replies))
    guard = Guard(fake, [Observe(), *layers], model="m")
    app = flask.Flask(__name__)
    init_app(
        app,
        identify=lambda r: CallContext(user=r.headers.get("x-user"), endpoint=r.path),
    )

    @app.get("/chat")
    def chat() -> Any:
        return stream_response(guard, user=flask.request.args["q"])

    @app.get("/answer")
    def answer() -> Any:
        return {"text": guard.sync.complete(user=flask.request.args["q"]).text}

    return app, fake


def test_streams_exact_frames_headers_and_context() -> None:
    app, fake = make_app("Hello!")
    with capture_records() as records:
        response = app.test_client().get("/chat?q=hi", headers={"x-user": "alice"})
        assert response.status_code == 200
        assert response.mimetype == "text/event-stream"
        assert response.headers["Cache-Control"] == "no-cache"
        assert response.headers["X-Accel-Buffering"] == "no"
        assert response.get_data() == HELLO_FRAMES
    assert fake.streams[-1].closed
    assert (records[0].user, records[0].endpoint, records[0].error) == ("alice", "/chat", None)


def test_a_cut_stream_ends_in_the_error_event() -> None:
    app, fake = make_app(FakeReply.cut("Hello, world", after=1))
    with capture_records() as records:
        data = app.test_client().get("/chat?q=hi").get_data()
    assert data == (
        b'data: {"type":"text","text":"Hell"}\n\n'
        b'event: error\ndata: {"type":"error","error":"ProviderError",'
        b'"message":"the model provider failed to answer","status":502}\n\n'
    )
    assert records[0].error == "ProviderError" and fake.streams[-1].closed


def test_a_refused_streaming_request_is_a_429_json() -> None:
    app, fake = make_app("never", layers=(Refuse(budget_refusal(0.2)),))
    response = app.test_client().get("/chat?q=hi")
    assert response.status_code == 429
    assert response.mimetype == "application/json"
    assert response.headers["Retry-After"] == "1"
    assert response.get_json()["error"]["type"] == "BudgetExceeded"
    assert b"data:" not in response.get_data()
    assert fake.streams == []


@pytest.mark.parametrize(
    ("reply", "status"),
    [(FakeReply.server_error(503), 502), (FakeReply.rate_limited(retry_after=7), 503)],
)
def test_error_handler_maps_plain_views(reply: FakeReply, status: int) -> None:
    app, _ = make_app(reply)
    response = app.test_client().get("/answer?q=hi")
    assert response.status_code == status
    assert set(response.get_json()["error"]) == {"type", "message"}


def test_a_client_that_leaves_early_closes_the_upstream() -> None:
    app, fake = make_app(FakeReply(text="a long answer", chunk_delay=math.inf))
    with capture_records() as records:
        response = app.test_client().get("/chat?q=hi", buffered=False)
        first = next(response.response)  # type: ignore[call-overload]
        response.close()
    assert first.startswith(b"data: ")
    assert fake.streams[-1].closed and not fake.streams[-1].completed
    assert records[0].error == "ClientDisconnected" and records[0].usage.output_tokens > 0
