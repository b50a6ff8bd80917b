"""A FastAPI chat endpoint that streams SSE through llmguard, offline (fake provider).

Run it and try it:

    uvicorn examples.fastapi_chat:app --port 8000
    curl -N 'http://127.0.0.1:8000/chat?q=Hello' -H 'x-user: alice'
"""

from __future__ import annotations

from fastapi import Depends, FastAPI, Request
from starlette.responses import Response

from llmguard import CallContext, Deadlines, Guard, Observe, StreamTimeouts
from llmguard.integrations.fastapi import (
    add_exception_handlers,
    context_dependency,
    stream_response,
)
from llmguard.testing import FakeProvider

guard = Guard(
    FakeProvider(default="Hello from llmguard! This answer streams in small chunks."),
    [Observe(), Deadlines(StreamTimeouts(first_token=10, idle=15, total=120))],
    model="fake-model",
)


def identify(request: Request) -> CallContext:
    return CallContext(user=request.headers.get("x-user"), endpoint="/chat")


app = FastAPI(dependencies=[Depends(context_dependency(identify))])
add_exception_handlers(app)  # BudgetExceeded -> 429, CircuitOpen -> 503, ...


@app.get("/chat")
async def chat(q: str) -> Response:
    return await stream_response(guard.stream(user=q))
