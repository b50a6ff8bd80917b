"""Each framework example runs offline and streams through its framework's test client."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from llmguard import TextDelta, parse_sse

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
ANSWER = "Hello from llmguard! This answer streams in small chunks."


def load(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def text_of(body: bytes) -> str:
    return "".join(e.text for e in parse_sse(body) if isinstance(e, TextDelta))


@pytest.mark.anyio
async def test_fastapi_example() -> None:
    app = load("fastapi_chat").app
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        response = await http.get("/chat", params={"q": "Hello"}, headers={"x-user": "alice"})
    assert response.headers["content-type"].startswith("text/event-stream")
    assert text_of(response.content) == ANSWER


def test_flask_example() -> None:
    app = load("flask_view").app
    response = app.test_client().get("/chat?q=Hello")
    assert text_of(response.get_data()) == ANSWER


def test_django_example_in_its_own_process() -> None:
    # Django's settings are process-wide: the example configures its own.
    code = f"""
import sys, django
sys.path.insert(0, {str(EXAMPLES)!r})
import django_view
django.setup()
from django.test import Client
from llmguard import TextDelta, parse_sse
for url in ("/chat?q=Hello", "/achat?q=Hello"):
    response = Client().get(url)
    body = b"".join(response.streaming_content)
    response.close()
    print("".join(e.text for e in parse_sse(body) if isinstance(e, TextDelta)))
"""
    out = subprocess.run(
        [sys.executable, "-W", "error", "-c", code],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [ANSWER, ANSWER]
