"""The Retry-After table: every header case, what llmguard decides, and what the openai
SDK decides for the same headers.

The expected column is written out by hand (from the SDK's source: openai 3.57,
``_parse_retry_after_header``, ``_calculate_retry_timeout``, ``_should_retry``; the cap
is its ``MAX_RETRY_AFTER_DELAY`` of 120 s). The SDK's own functions are then run on
the same headers and must agree, so a change of behaviour in a new SDK shows up here.
"""

from __future__ import annotations

import functools
import math
import time
from email.utils import format_datetime
from typing import Any

import openai
import pytest

from llmguard._retry_after import DEFAULT_MAX_RETRY_AFTER, decide, parse_retry_after

DATE = "@date"  # a placeholder: "@date+30" becomes the HTTP date 30 s from now


def resolve(headers: dict[str, str]) -> dict[str, str]:
    """Headers with date placeholders turned into HTTP dates relative to now."""
    from datetime import UTC, datetime

    out = {}
    for name, value in headers.items():
        if value.startswith(DATE):
            moment = datetime.fromtimestamp(time.time() + float(value[len(DATE) :]), UTC)
            value = format_datetime(moment, usegmt=True)
        out[name] = value
    return out


# (case id, headers, expected decision, expected seconds when "wait")
TABLE: list[tuple[str, dict[str, str], str, float]] = [
    ("absent", {}, "backup", 0.0),
    ("seconds", {"retry-after": "2"}, "wait", 2.0),
    ("fractional, any case", {"Retry-After": "0.5"}, "wait", 0.5),
    ("whitespace", {"retry-after": " 3 "}, "wait", 3.0),
    ("underscores (a Python float)", {"retry-after": "1_0"}, "wait", 10.0),
    ("zero", {"retry-after": "0"}, "backup", 0.0),
    ("negative", {"retry-after": "-1"}, "backup", 0.0),
    ("negative zero", {"retry-after": "-0"}, "backup", 0.0),
    ("nan", {"retry-after": "nan"}, "backup", 0.0),
    ("inf literal", {"retry-after": "inf"}, "backup", 0.0),
    ("Infinity literal", {"retry-after": "Infinity"}, "backup", 0.0),
    ("-inf", {"retry-after": "-inf"}, "backup", 0.0),
    ("overflow exponent", {"retry-after": "1e999"}, "give_up", 0.0),
    ("overflow digits", {"retry-after": "9" * 400}, "give_up", 0.0),
    ("not a number", {"retry-after": "soon"}, "backup", 0.0),
    ("empty", {"retry-after": ""}, "backup", 0.0),
    ("at the cap", {"retry-after": "120"}, "wait", 120.0),
    ("just above the cap", {"retry-after": "120.5"}, "give_up", 0.0),
    ("an hour", {"retry-after": "3600"}, "give_up", 0.0),
    ("ms", {"retry-after-ms": "1500"}, "wait", 1.5),
    ("fractional ms", {"retry-after-ms": "0.5"}, "wait", 0.0005),
    ("ms wins over seconds", {"retry-after-ms": "1500", "retry-after": "9"}, "wait", 1.5),
    ("bad ms falls to seconds", {"retry-after-ms": "bogus", "retry-after": "9"}, "wait", 9.0),
    ("negative ms is used (backoff)", {"retry-after-ms": "-5", "retry-after": "9"}, "backup", 0.0),
    ("nan ms is used (backoff)", {"retry-after-ms": "nan", "retry-after": "2"}, "backup", 0.0),
    ("zero ms", {"retry-after-ms": "0"}, "backup", 0.0),
    ("ms at the cap", {"retry-after-ms": "120000"}, "wait", 120.0),
    ("ms above the cap", {"retry-after-ms": "120001"}, "give_up", 0.0),
    ("ms overflow", {"retry-after-ms": "1e999"}, "give_up", 0.0),
    ("ms inf literal", {"retry-after-ms": "inf"}, "backup", 0.0),
    ("HTTP date in 30 s", {"retry-after": f"{DATE}+30"}, "wait", 30.0),
    ("HTTP date in the past", {"retry-after": f"{DATE}-30"}, "backup", 0.0),
    ("HTTP date in an hour", {"retry-after": f"{DATE}+3600"}, "give_up", 0.0),
    ("bad HTTP date", {"retry-after": "Wed, 99 Foo 2026 00:00:00 GMT"}, "backup", 0.0),
    ("absurd HTTP date", {"retry-after": "Mon, 01 Jan 10000000000 00:00:00 GMT"}, "backup", 0.0),
]
# "backup" is our own backoff: spelled so in the table to keep the columns aligned.
DECISIONS = {"backup": "backoff", "wait": "wait", "give_up": "give_up"}


def test_the_table_is_large_enough() -> None:
    assert len(TABLE) >= 23
    assert {DECISIONS[row[2]] for row in TABLE} == {"wait", "backoff", "give_up"}


@pytest.mark.parametrize(
    ("case", "headers", "decision", "seconds"), TABLE, ids=[r[0] for r in TABLE]
)
def test_llmguard_decision(
    case: str, headers: dict[str, str], decision: str, seconds: float
) -> None:
    kind, wait = decide(parse_retry_after(resolve(headers)), cap=DEFAULT_MAX_RETRY_AFTER)
    assert kind == DECISIONS[decision], case
    if kind == "wait":
        assert wait == pytest.approx(seconds, abs=2.0 if "date" in case else 1e-9)


@functools.cache
def _client() -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="sk-test", max_retries=2)


def _sdk_decision(headers: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> tuple[str, float]:
    """What the openai SDK does with a 429 carrying ``headers``, from its own functions.

    Its own backoff has jitter and an honoured wait has none: the delay is computed
    with the jitter's random draw at both ends; if it moves, the SDK backed off.
    """
    from openai import _base_client
    from openai._models import FinalRequestOptions

    http: Any
    if int(openai.__version__.split(".")[0]) >= 3:
        import httpx2 as http
    else:
        import httpx as http

    client = _client()
    for name in ("_parse_retry_after_header", "_calculate_retry_timeout", "_should_retry"):
        if not hasattr(client, name) or not hasattr(_base_client, "random"):
            pytest.skip(f"this openai SDK has no {name}: the hand-written column stands alone")
    wire = http.Headers(resolve(headers))
    if not client._should_retry(http.Response(429, headers=wire)):
        return ("give_up", 0.0)
    options = FinalRequestOptions.construct(method="post", url="/chat/completions")
    delays = []
    for draw in (0.0, 0.999):
        monkeypatch.setattr(_base_client, "random", lambda draw=draw: draw)
        delays.append(client._calculate_retry_timeout(2, options, wire))
    if math.isclose(delays[0], delays[1], abs_tol=0.05):  # (a date is read twice)
        return ("wait", delays[0])
    return ("backoff", 0.0)


@pytest.mark.parametrize(
    ("case", "headers", "decision", "seconds"), TABLE, ids=[r[0] for r in TABLE]
)
def test_the_openai_sdk_agrees(
    case: str,
    headers: dict[str, str],
    decision: str,
    seconds: float,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if int(openai.__version__.split(".")[0]) < 3 and "overflow" in case:
        pytest.skip("openai 2.x backs off on an overflowing number; 3.x gives up (we follow 3.x)")
    kind, wait = _sdk_decision(headers, monkeypatch)
    assert kind == DECISIONS[decision], case
    if kind == "wait":
        assert wait == pytest.approx(seconds, abs=2.0 if "date" in case else 1e-9)


def test_a_lower_cap_gives_up_sooner() -> None:
    assert decide(30.0, cap=10.0) == ("give_up", 0.0)
    assert decide(10.0, cap=10.0) == ("wait", 10.0)
    assert decide(math.inf, cap=1e300) == ("give_up", 0.0)
    assert decide(None, cap=0.0) == ("backoff", 0.0)
