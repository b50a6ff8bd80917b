from __future__ import annotations

import math
from typing import Any

import django
import pytest
from django.conf import settings

if not settings.configured:
    settings.configure(
        DEBUG=False,
        ALLOWED_HOSTS=["*"],
        ROOT_URLCONF=__name__,
        MIDDLEWARE=["llmguard.integrations.django.LLMGuardMiddleware"],
        LLMGUARD_IDENTIFY=f"{__name__}.identify",
        INSTALLED_APPS=[],
        USE_TZ=True,
    )
    django.setup()

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.test import AsyncClient, Client
from django.urls import path

from llmguard import CallContext, Guard, Observe, parse_sse
from llmguard.integrations.django import astream_response, stream_response
from llmguard.testing import FakeProvider, FakeReply, capture_records

from ._layers import Refuse, budget_refusal

HELLO_FRAMES = (
    b'data: {"type":"text","text":"Hell"}\n\n'
    b'data: {"type":"text","text":"o!"}\n\n'
    b'data: {"type":"usage","input_tokens":4,"output_tokens":2,"cached_input_tokens":0,"reasoning_tokens":0,"estimated":false}\n\n'
    b'data: {"type":"finish","reason":"stop"}\n\n'
    b"data: [DONE]\n\n"
)


def identify(request: HttpRequest) -> CallContext:
    return CallContext(user=request.headers.get("x-user"), endpoint=request.path)


class Holder:
    guard: Guard


holder = Holder()


def sync_chat(request: HttpRequest) -> HttpResponse:
    return stream_response(request, holder.guard, user=request.GET["q"])


async def async_chat(request: HttpRequest) -> HttpResponse:
    return await astream_response(request, holder.guard, user=request.GET["q"])


async def answer(request: HttpRequest) -> HttpResponse:
    return JsonResponse({"text": (await holder.guard.complete(user=request.GET["q"])).text})


urlpatterns = [
    path("sync", sync_chat),
    path("async", async_chat),
    path("answer", answer),
]


def use(*replies: Any, layers: tuple[Any, ...] = ()) -> FakeProvider:
    fake = FakeProvider(list(replies))
    holder.guard = Guard(fake, [Observe(), *layers], model="m")
    return fake


def body_of(response: Any) -> bytes:
    return b"".join(response.streaming_content)


def check_headers(response: Any) -> None:
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"


@pytest.mark.parametrize("url", ["/sync", "/async"])
def test_wsgi_streams_exact_frames_with_a_sync_iterator_and_no_warning(url: str) -> None:
    fake = use("Hello!")
    with capture_records() as records:
        response = Client().get(url, {"q": "hi"}, headers={"x-user": "alice"})
        check_headers(response)
        assert not response.is_async  # WSGI: a blocking iterator, never buffered whole
        assert body_of(response) == HELLO_FRAMES
        response.close()
    assert fake.streams[-1].closed
    assert (records[0].user, records[0].endpoint, records[0].error) == ("alice", url, None)


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])  # Django's async stack is asyncio's
@pytest.mark.parametrize("url", ["/sync", "/async"])
async def test_asgi_streams_exact_frames_with_an_async_iterator(url: str) -> None:
    fake = use("Hello!")
    with capture_records() as records:
        response = await AsyncClient().get(url, {"q": "hi"}, headers={"x-user": "bob"})
        check_headers(response)
        assert response.is_async
        body = b"".join([chunk async for chunk in response.streaming_content])
    assert body == HELLO_FRAMES
    assert fake.streams[-1].closed
    assert (records[0].user, records[0].endpoint) == ("bob", url)


@pytest.mark.parametrize("url", ["/sync", "/async"])
def test_a_cut_stream_ends_in_the_error_event(url: str) -> None:
    fake = use(FakeReply.cut("Hello, world", after=1))
    with capture_records() as records:
        response = Client().get(url, {"q": "hi"})
        body = body_of(response)
        response.close()
    assert body == (
        b'data: {"type":"text","text":"Hell"}\n\n'
        b'event: error\ndata: {"type":"error","error":"ProviderError",'
        b'"message":"the model provider failed to answer","status":502}\n\n'
    )
    assert records[0].error == "ProviderError" and fake.streams[-1].closed


@pytest.mark.parametrize("url", ["/sync", "/async"])
def test_a_refused_streaming_request_is_a_429_json(url: str) -> None:
    fake = use("never", layers=(Refuse(budget_refusal(9.5)),))
    response = Client().get(url, {"q": "hi"}, headers={"x-user": "alice"})
    assert response.status_code == 429
    assert response["Content-Type"] == "application/json"
    assert response["Retry-After"] == "10"
    error = response.json()["error"]
    assert (error["type"], error["remaining"], error["scope"]) == (
        "BudgetExceeded",
        10,
        "user:alice",
    )
    assert b"data:" not in response.content
    assert fake.streams == []


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_refused_request_under_asgi_is_a_429_too() -> None:
    use("never", layers=(Refuse(budget_refusal()),))
    response = await AsyncClient().get("/async", {"q": "hi"})
    assert response.status_code == 429
    assert response.json()["error"]["type"] == "BudgetExceeded"


def test_middleware_maps_errors_of_plain_views() -> None:
    use(FakeReply.timeout())
    response = Client().get("/answer", {"q": "hi"})
    assert response.status_code == 502
    assert response.json() == {
        "error": {"type": "ProviderTimeout", "message": "the model provider failed to answer"}
    }


def test_a_client_that_leaves_early_closes_the_upstream() -> None:
    fake = use(FakeReply(text="a long answer, chunk by chunk", chunk_delay=math.inf))
    with capture_records() as records:
        response = Client().get("/sync", {"q": "hi"})
        first = next(iter(response.streaming_content))
        response.close()  # what a WSGI server does when the client is gone
    assert first.startswith(b"data: ")
    assert fake.streams[-1].closed and not fake.streams[-1].completed
    assert records[0].error == "ClientDisconnected" and records[0].usage.output_tokens > 0


def test_parse_sse_reads_what_django_sent() -> None:
    use("Hello!")
    response = Client().get("/async", {"q": "hi"})
    assert "".join(e.text for e in parse_sse(body_of(response)) if hasattr(e, "text")) == "Hello!"  # type: ignore[union-attr]
    response.close()
