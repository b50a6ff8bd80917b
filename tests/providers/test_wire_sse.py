"""The lean path's SSE decoder and JSON reader against the openai SDK's own.

``SSEDecoder`` must yield the events ``openai._streaming.SSEDecoder`` yields for any
bytes split anywhere, and raise where it raises; ``loads`` must return what
``json.loads`` returns, or raise its error with its message.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openai._streaming import SSEDecoder as SDKDecoder

from llmguard._providers._wire_chat import loads
from llmguard._providers._wire_sse import SSEDecoder

from .conftest import OPENAI_MAJOR

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The lean decoder follows openai 3.x's (and the SSE spec). openai 2.x's splits the body
# into events before it splits lines, so a CR LF that straddles two reads counts twice
# there; the endpoint-level parity suite runs on 2.x too.
SDK_3X = pytest.mark.skipif(
    OPENAI_MAJOR < 3,
    reason="compared with openai 3.x's SSE decoder; 2.x reads CR LF across reads differently",
)


def sdk_events(pieces: list[bytes]) -> tuple[list[tuple[str | None, str]], str | None]:
    events: list[tuple[str | None, str]] = []
    try:
        for sse in SDKDecoder().iter_bytes(iter(pieces)):
            events.append((sse.event, sse.data))
    except UnicodeDecodeError as exc:
        return events, str(exc)
    return events, None


def lean_events(pieces: list[bytes]) -> tuple[list[tuple[str | None, str]], str | None]:
    decoder = SSEDecoder()
    events: list[tuple[str | None, str]] = []
    for piece in pieces:
        events.extend(decoder.feed(piece))
        if decoder.error is not None:
            return events, str(decoder.error)
    try:
        decoder.finish()
    except UnicodeDecodeError as exc:
        return events, str(exc)
    return events, None


def split(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    pieces, start = [], 0
    for point in points:
        pieces.append(body[start:point])
        start = point
    pieces.append(body[start:])
    return pieces


FIELDS = [b"data: ", b"data:", b"event: ", b"event:", b"id: ", b"retry: ", b": ", b"x: ", b":"]
VALUES = [b"[DONE]", b"{}", b'{"a": 1}', b"12", b"\x00", b"\xc3\xa9", b"\xff", b" ", b"abc"]
LINE_PARTS = st.sampled_from([*FIELDS, *VALUES])
ENDINGS = st.sampled_from([b"\n", b"\r", b"\r\n", b"\n\n", b"\r\n\r\n", b"\r\r", b""])
BODIES = st.lists(st.tuples(st.lists(LINE_PARTS, max_size=3), ENDINGS), max_size=12).map(
    lambda lines: b"".join(b"".join(parts) + end for parts, end in lines)
)


@SDK_3X
@PROPERTY
@given(body=BODIES, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=6))
def test_the_same_events_as_the_sdk_decoder_however_the_bytes_are_split(
    body: bytes, cuts: list[int]
) -> None:
    pieces = split(body, cuts)
    assert lean_events(pieces) == sdk_events(pieces)
    one_by_one = [body[i : i + 1] for i in range(len(body))]
    assert lean_events(one_by_one) == sdk_events(one_by_one)
    assert lean_events([body]) == sdk_events([body])


@SDK_3X
@PROPERTY
@given(body=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=5))
def test_the_same_events_for_any_bytes(body: bytes, cuts: list[int]) -> None:
    pieces = split(body, cuts)
    assert lean_events(pieces) == sdk_events(pieces)


@SDK_3X
@pytest.mark.parametrize(
    "pieces",
    [
        [b"data: a\r", b"\ndata: b\n\n"],  # CR at the end of one read, LF at the next
        [b"data: a\r", b"", b"\n\n"],  # an empty read in between
        [b"data: a\r", b"\r\n"],
        [b"id: 1\n\n\n\n"],  # the last id is kept: each blank line dispatches
        [b"data: x\n", b"\n", b"data: y"],  # the last line never ends its event
        [b"data: \xff\n\ndata: ok\n\n"],
        [b"data: ok\n\n", b"data: \xff\n\n"],  # the good event first, then the error
        [b"retry: x\n\n", b"retry: 5\n\n", b"event:\n\n", b"id: a\x00b\n\n"],
        [b"data: one\ndata: two\n\n"],
    ],
)
def test_edge_cases(pieces: list[bytes]) -> None:
    assert lean_events(pieces) == sdk_events(pieces)


def test_an_error_waits_for_the_events_before_it() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: \xff\n\ndata: b\n\n") == [(None, "a")]
    assert isinstance(decoder.error, UnicodeDecodeError)
    assert decoder.feed(b"data: c\n\n") == []
    with pytest.raises(UnicodeDecodeError):
        decoder.finish()


def json_outcome(read: Any, data: bytes | str) -> tuple[str, Any]:
    try:
        value = read(data)
    except (ValueError, TypeError) as exc:
        return type(exc).__name__, str(exc)
    return "ok", repr(value)


JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=4), children, max_size=3)
    ),
    max_leaves=8,
).map(json.dumps)


@PROPERTY
@given(text=JSON_TEXT | st.text(max_size=30), as_bytes=st.booleans())
def test_loads_is_json_loads(text: str, as_bytes: bool) -> None:
    data: bytes | str = text.encode("utf-8", "surrogatepass") if as_bytes else text
    assert json_outcome(loads, data) == json_outcome(json.loads, data)


@PROPERTY
@given(data=st.binary(max_size=40))
def test_loads_is_json_loads_for_any_bytes(data: bytes) -> None:
    assert json_outcome(loads, data) == json_outcome(json.loads, data)


@pytest.mark.parametrize(
    "data",
    [b'"\\ud800"', b"NaN", b"[Infinity]", b"1e400", b"\xef\xbb\xbf{}", '{"a": 1}'.encode("utf-16")],
)
def test_loads_where_jiter_and_json_differ(data: bytes) -> None:
    assert json_outcome(loads, data) == json_outcome(json.loads, data)
