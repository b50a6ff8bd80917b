from __future__ import annotations

from typing import Any

import httpx
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI
from starlette.requests import HTTPConnection

from llmguard import (
    CallContext,
    CircuitOpen,
    Guard,
    Observe,
    StreamTimeout,
    parse_sse,
)
from llmguard.integrations.fastapi import (
    ContextMiddleware,
    add_background_task,
    add_exception_handlers,
    context_dependency,
    stream_response,
)
from llmguard.testing import FakeProvider, FakeReply, capture_records

from ._layers import Refuse, budget_refusal

HELLO_FRAMES = (
    b'data: {"type":"text","text":"Hell"}\n\n'
    b'data: {"type":"text","text":"o!"}\n\n'
    b'data: {"type":"usage","input_tokens":4,"output_tokens":2,"cached_input_tokens":0,"reasoning_tokens":0,"estimated":false}\n\n'
    b'data: {"type":"finish","reason":"stop"}\n\n'
    b"data: [DONE]\n\n"
)


def identify(request: HTTPConnection) -> CallContext:
    return CallContext(user=request.headers.get("x-user"), endpoint=request.url.path)


def make_app(guard: Guard) -> FastAPI:
    app = FastAPI()
    add_exception_handlers(app)
    who = Depends(context_dependency(identify))

    @app.get("/chat", dependencies=[who])
    async def chat(q: str) -> Any:
        return await stream_response(guard.stream(user=q))

    @app.get("/answer", dependencies=[who])
    async def answer(q: str) -> dict[str, str]:
        return {"text": (await guard.complete(user=q)).text}

    @app.post("/later", dependencies=[who])
    async def later(q: str, tasks: BackgroundTasks) -> dict[str, str]:
        add_background_task(tasks, guard.complete, user=q)
        return {"queued": q}

    return app


def client(app: Any) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.anyio
async def test_streams_exact_frames_headers_and_done() -> None:
    guard = Guard(FakeProvider(["Hello!"]), [Observe()], model="m")
    with capture_records() as records:
        async with client(make_app(guard)) as http:
            response = await http.get("/chat", params={"q": "hi"}, headers={"x-user": "alice"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.content == HELLO_FRAMES
    (record,) = records
    # the context set by the dependency is in the record of the streamed body
    assert (record.user, record.endpoint, record.error) == ("alice", "/chat", None)
    assert record.usage.output_tokens == 2


@pytest.mark.anyio
async def test_a_cut_stream_ends_in_an_error_event_not_done() -> None:
    fake = FakeProvider([FakeReply.cut("Hello, world", after=1)])
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records:
        async with client(make_app(guard)) as http:
            response = await http.get("/chat", params={"q": "hi"})
    assert response.status_code == 200  # the headers had gone out
    assert response.content == (
        b'data: {"type":"text","text":"Hell"}\n\n'
        b'event: error\ndata: {"type":"error","error":"ProviderError",'
        b'"message":"the model provider failed to answer","status":502}\n\n'
    )
    assert records[0].error == "ProviderError" and records[0].usage.output_tokens > 0
    assert fake.streams[-1].closed


@pytest.mark.anyio
async def test_a_refused_streaming_request_is_a_429_json_without_any_frame() -> None:
    fake = FakeProvider(["never"])
    guard = Guard(fake, [Observe(), Refuse(budget_refusal())], model="m")
    with capture_records() as records:
        async with client(make_app(guard)) as http:
            response = await http.get("/chat", params={"q": "hi"}, headers={"x-user": "alice"})
    assert response.status_code == 429
    assert response.headers["content-type"] == "application/json"
    assert response.headers["retry-after"] == "43"
    body = response.json()
    reset_at = body["error"].pop("reset_at")
    assert reset_at.endswith("+00:00")
    assert body == {
        "error": {
            "type": "BudgetExceeded",
            "message": "the budget for this request is used up; try again after it resets",
            "scope": "user:alice",
            "limit": 1000,
            "used": 990,
            "remaining": 10,
            "unit": "tokens",
        }
    }
    assert b"data:" not in response.content
    assert fake.streams == []  # nothing was sent upstream
    assert records[0].error == "BudgetExceeded" and records[0].user == "alice"


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("error", "status"),
    [(CircuitOpen("openai"), 503), (StreamTimeout("first_token", 5), 504)],
)
async def test_other_refusals_map_to_their_status(error: Exception, status: int) -> None:
    guard = Guard(FakeProvider(["x"]), [Refuse(error)], model="m")
    async with client(make_app(guard)) as http:
        streamed = await http.get("/chat", params={"q": "hi"})
        plain = await http.get("/answer", params={"q": "hi"})
    assert streamed.status_code == plain.status_code == status
    assert streamed.json() == plain.json()
    assert streamed.json()["error"]["type"] == type(error).__name__


@pytest.mark.anyio
async def test_exception_handler_maps_errors_of_plain_endpoints() -> None:
    fake = FakeProvider([FakeReply.rate_limited(retry_after=2.5), FakeReply.server_error(500)])
    async with client(make_app(Guard(fake, model="m"))) as http:
        limited = await http.get("/answer", params={"q": "hi"})
        failed = await http.get("/answer", params={"q": "hi"})
    assert (limited.status_code, limited.headers["retry-after"]) == (503, "3")
    assert failed.status_code == 502
    assert failed.json() == {
        "error": {"type": "ProviderError", "message": "the model provider failed to answer"}
    }


@pytest.mark.anyio
async def test_background_task_records_carry_the_requests_user_and_endpoint() -> None:
    guard = Guard(FakeProvider(["done"]), [Observe()], model="m")
    with capture_records() as records:
        async with client(make_app(guard)) as http:
            response = await http.post("/later", params={"q": "hi"}, headers={"x-user": "bob"})
    assert response.json() == {"queued": "hi"}
    (record,) = records
    assert (record.user, record.endpoint, record.error) == ("bob", "/later", None)


@pytest.mark.anyio
async def test_middleware_sets_the_context_for_the_streamed_body() -> None:
    guard = Guard(FakeProvider(["Hello!"]), [Observe()], model="m")
    app = FastAPI()
    app.add_middleware(ContextMiddleware, identify=identify)

    @app.get("/plain")
    async def plain(q: str) -> Any:
        return await stream_response(guard.stream(user=q), heartbeat=None)

    with capture_records() as records:
        async with client(app) as http:
            response = await http.get("/plain", params={"q": "hi"}, headers={"x-user": "carol"})
    assert list(parse_sse(response.content))[-1].reason == "stop"  # type: ignore[union-attr]
    assert (records[0].user, records[0].endpoint) == ("carol", "/plain")
