"""A Flask view that streams SSE through llmguard, offline (fake provider).

Run it and try it:

    flask --app examples/flask_view.py run --port 5000
    curl -N 'http://127.0.0.1:5000/chat?q=Hello' -H 'x-user: alice'
"""

from __future__ import annotations

from flask import Flask, Response, request

from llmguard import CallContext, Deadlines, Guard, Observe, StreamTimeouts
from llmguard.integrations.flask import init_app, stream_response
from llmguard.testing import FakeProvider

guard = Guard(
    FakeProvider(default="Hello from llmguard! This answer streams in small chunks."),
    [Observe(), Deadlines(StreamTimeouts(first_token=10, idle=15, total=120))],
    model="fake-model",
)

app = Flask(__name__)
# who is calling, for budgets and records; llmguard errors become JSON (429, 503, ...)
init_app(app, identify=lambda r: CallContext(user=r.headers.get("x-user"), endpoint=r.path))


@app.get("/chat")
def chat() -> Response:
    return stream_response(guard, user=request.args.get("q", "Hello"))
