"""The call record through stdlib logging, as structlog and JSON formatters read it."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
import structlog

from llmguard import Guard, Observe, context
from llmguard.testing import FakeProvider

pytestmark = pytest.mark.anyio

FIELDS = {
    "call_id", "provider", "model", "user", "tenant", "endpoint", "tags", "stream",
    "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
    "usage_estimated", "cost_micros", "latency_s", "time_to_first_token_s", "cache",
    "attempts", "fallback", "finish_reason", "error", "prompt", "completion",
    "tool_calls", "tool_errors", "fallback_reasons",
}  # fmt: skip


@pytest.fixture
def structlog_output() -> Iterator[io.StringIO]:
    """structlog's documented stdlib bridge: a ProcessorFormatter that adds the log
    record's extras and renders JSON."""
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(default=repr),
            ],
            foreign_pre_chain=[
                structlog.stdlib.add_log_level,
                structlog.stdlib.ExtraAdder(allow=["llmguard"]),
            ],
        )
    )
    logger = logging.getLogger("llmguard.calls.structlog-test")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield out
    logger.removeHandler(handler)


async def test_the_documented_fields_reach_structlog_as_json(structlog_output: io.StringIO) -> None:
    logger = logging.getLogger("llmguard.calls.structlog-test")
    guard = Guard(FakeProvider(default="Paris."), [Observe(logger=logger)], model="m")
    with context(user="u1", endpoint="/ask", tags=["beta"]):
        await guard.complete(user="Capital of France?")
    (line,) = structlog_output.getvalue().splitlines()
    entry = json.loads(line)
    assert entry["level"] == "info" and entry["event"].startswith("llm call ")
    fields = entry["llmguard"]
    assert set(fields) == FIELDS  # the list in docs/observability.md, exactly
    assert fields["user"] == "u1" and fields["endpoint"] == "/ask" and fields["tags"] == ["beta"]
    assert fields["model"] == "m" and fields["output_tokens"] > 0 and fields["error"] is None
    assert fields["prompt"] is None and fields["completion"] is None


def test_the_docs_list_every_field() -> None:
    from pathlib import Path

    page = (Path(__file__).resolve().parents[2] / "docs" / "observability.md").read_text()
    missing = [name for name in FIELDS if f"`{name}`" not in page]
    assert missing == []
