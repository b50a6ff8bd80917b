"""A Django view that streams SSE through llmguard, offline (fake provider): a whole
one-file project. Sync and async views both work, under WSGI and ASGI.

Run it and try it:

    python examples/django_view.py runserver 8000          # WSGI (sync iterator)
    curl -N 'http://127.0.0.1:8000/chat?q=Hello' -H 'x-user: alice'
    curl -N 'http://127.0.0.1:8000/achat?q=Hello'
"""

from __future__ import annotations

import sys

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.urls import path

from llmguard import CallContext, Deadlines, Guard, Observe, StreamTimeouts
from llmguard.integrations.django import astream_response, stream_response
from llmguard.testing import FakeProvider

if not settings.configured:
    settings.configure(
        DEBUG=True,
        ROOT_URLCONF=__name__,
        ALLOWED_HOSTS=["*"],
        SECRET_KEY="example-only",
        MIDDLEWARE=["llmguard.integrations.django.LLMGuardMiddleware"],
        LLMGUARD_IDENTIFY=f"{__name__}.identify",
    )

guard = Guard(
    FakeProvider(default="Hello from llmguard! This answer streams in small chunks."),
    [Observe(), Deadlines(StreamTimeouts(first_token=10, idle=15, total=120))],
    model="fake-model",
)


def identify(request: HttpRequest) -> CallContext:
    return CallContext(user=request.headers.get("x-user"), endpoint=request.path)


def chat(request: HttpRequest) -> HttpResponse:
    return stream_response(request, guard, user=request.GET.get("q", "Hello"))


async def achat(request: HttpRequest) -> HttpResponse:
    return await astream_response(request, guard, user=request.GET.get("q", "Hello"))


urlpatterns = [path("chat", chat), path("achat", achat)]

if __name__ == "__main__":
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
