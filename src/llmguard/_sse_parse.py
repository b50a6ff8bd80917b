"""``parse_sse()`` and ``aparse_sse()``: read what ``sse()`` wrote, as stream events.

A decoder that follows the SSE rules (lines end in ``\\r\\n``, ``\\n`` or ``\\r``;
a blank line ends a message; ``:`` starts a comment; ``data:`` lines join with
``\\n``), fed any chunking of the bytes. An ``event: error`` frame raises
``SSEError``; so does a stream that ends without ``data: [DONE]``.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ._errors import SSEError
from ._types import (
    Finish,
    RefusalDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageUpdate,
)

__all__ = ["SSEMessage", "aparse_sse", "parse_sse"]

_LINE = re.compile(r"\r\n|\r|\n")  # SSE's line ends only (str.splitlines knows more)


@dataclass(frozen=True, slots=True, kw_only=True)
class SSEMessage:
    """One SSE message: its ``event`` name (``"message"`` unless named) and ``data``."""

    event: str
    data: str


class _Decoder:
    """Incremental SSE decoding: ``feed(chunk)`` returns the messages it completed."""

    __slots__ = ("_buffer", "_data", "_event", "_text")

    def __init__(self) -> None:
        self._text = codecs.getincrementaldecoder("utf-8")()
        self._buffer = ""
        self._data: list[str] = []
        self._event = ""

    def feed(self, chunk: bytes | str, *, final: bool = False) -> list[SSEMessage]:
        text = chunk if isinstance(chunk, str) else self._text.decode(chunk, final=final)
        buffer = self._buffer + text
        tail = ""
        if not final and buffer.endswith("\r"):
            # "\r" may be the first half of "\r\n": wait for the next chunk to know.
            buffer, tail = buffer[:-1], "\r"
        lines = _LINE.split(buffer)
        rest = lines.pop()
        if final:
            self._buffer = ""
            if rest:
                lines.append(rest)
        else:
            self._buffer = rest + tail
        out: list[SSEMessage] = []
        for line in lines:
            if not line:
                if self._data:
                    out.append(
                        SSEMessage(event=self._event or "message", data="\n".join(self._data))
                    )
                self._data, self._event = [], ""
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            if value.startswith(" "):
                value = value[1:]
            if name == "data":
                self._data.append(value)
            elif name == "event":
                self._event = value
        return out


def _event_of(payload: dict[str, Any]) -> StreamEvent | None:
    kind = payload.get("type")
    if kind == "text":
        return TextDelta(text=payload["text"])
    if kind == "tool_call":
        return ToolCallDelta(
            index=payload["index"],
            id=payload.get("id"),
            name=payload.get("name"),
            arguments=payload.get("arguments", ""),
        )
    if kind == "usage":
        return UsageUpdate(
            usage=Usage(
                input_tokens=payload.get("input_tokens", 0),
                output_tokens=payload.get("output_tokens", 0),
                cached_input_tokens=payload.get("cached_input_tokens", 0),
                reasoning_tokens=payload.get("reasoning_tokens", 0),
                estimated=bool(payload.get("estimated", False)),
            )
        )
    if kind == "finish":
        return Finish(reason=payload.get("reason"))
    if kind == "refusal":
        return RefusalDelta(text=payload["text"])
    return None  # a type from a newer version: skipped


class _Reader:
    __slots__ = ("_decoder", "done")

    def __init__(self) -> None:
        self._decoder = _Decoder()
        self.done = False

    def feed(self, chunk: bytes | str, *, final: bool = False) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for message in self._decoder.feed(chunk, final=final):
            if self.done:
                continue
            if message.event == "error":
                try:
                    payload = json.loads(message.data)
                except ValueError:
                    payload = {}
                raise SSEError(
                    str(payload.get("error") or "Error"),
                    str(payload.get("message") or message.data),
                    status_code=payload.get("status"),
                )
            if message.data == "[DONE]":
                self.done = True
                continue
            if message.event != "message":
                continue
            event = _event_of(json.loads(message.data))
            if event is not None:
                events.append(event)
        if final and not self.done:
            raise SSEError("IncompleteStream", "the stream ended without data: [DONE]")
        return events


def parse_sse(source: bytes | str | Iterable[bytes | str]) -> Iterator[StreamEvent]:
    """The events of an ``sse()`` body: all of it, or its chunks as they arrive.

    Raises ``SSEError`` at an ``event: error`` frame, or at the end when
    ``data: [DONE]`` never came.

    >>> [e.text for e in parse_sse(b'data: {"type":"text","text":"hi"}\\n\\ndata: [DONE]\\n\\n')]
    ['hi']
    """
    chunks: Iterable[bytes | str] = [source] if isinstance(source, bytes | str) else source
    reader = _Reader()
    for chunk in chunks:
        yield from reader.feed(chunk)
    yield from reader.feed(b"", final=True)


async def aparse_sse(source: AsyncIterable[bytes | str]) -> AsyncIterator[StreamEvent]:
    """``parse_sse`` for an async source, e.g. ``response.aiter_bytes()`` of httpx."""
    reader = _Reader()
    async for chunk in source:
        for event in reader.feed(chunk):
            yield event
    for event in reader.feed(b"", final=True):
        yield event
