"""Server-sent events from a byte stream, read exactly as the openai SDK reads them.

``SSEDecoder`` takes the body's bytes as they arrive and returns the events they
complete, as ``(event, data)`` pairs. It follows the SDK's own decoder
(``openai._streaming.SSEDecoder``) line for line, so the lean wire path sees the same
events the SDK path sees, edge cases included:

- a line ends at CR, LF or CRLF (a CR at the end of one read and an LF at the start of
  the next are one line end); each line is decoded as strict UTF-8;
- ``:`` starts a comment; ``field: value`` loses one space after the colon; ``data``
  lines of one event are joined with ``\\n``; ``event``, ``id`` and ``retry`` are read;
- a blank line ends an event, unless nothing was set since the last one; the last
  event id is kept across events (as the spec says, and so the SDK dispatches an empty
  event for each further blank line once an ``id`` was seen);
- the bytes after the last line end are one more line at the end of the body, read but
  never dispatched (an event without its blank line is incomplete).

An error while decoding (invalid UTF-8) is kept until the events before it have been
taken: the SDK decodes lazily, so it raises only when the reader gets that far.
"""

from __future__ import annotations

from contextlib import suppress

__all__ = ["SSEDecoder", "SSEEvent"]

SSEEvent = tuple[str | None, str]
"""One event: its ``event`` name (``None`` when it has none) and its ``data``."""


class SSEDecoder:
    """Incremental SSE decoding: ``feed`` each piece of the body, ``finish`` at its end."""

    __slots__ = ("_buffer", "_data", "_event", "_last_id", "_retry", "_skip_lf", "error")

    def __init__(self) -> None:
        self._buffer = b""
        self._skip_lf = False
        self._event: str | None = None
        self._data: list[str] = []
        self._last_id: str | None = None
        self._retry: int | None = None
        self.error: Exception | None = None
        """An error met while decoding, to raise once the events before it are taken."""

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """The events that ``chunk`` completes (after an error: none)."""
        if self.error is not None:
            return []
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[0] == 10:  # b"\n"
                chunk = chunk[1:]
        if self._buffer:
            chunk = self._buffer + chunk
            self._buffer = b""
        lines = chunk.splitlines(True)
        if not lines:
            return []
        last = lines[-1]
        if last[-1:] == b"\r":
            self._skip_lf = True  # an LF that starts the next piece ends this same line
        elif last[-1:] != b"\n":
            self._buffer = lines.pop()
        events: list[SSEEvent] = []
        try:
            for raw in lines:
                line = raw.rstrip(b"\r\n").decode("utf-8")
                if line[:6] == "data: ":
                    self._data.append(line[6:])
                elif line:
                    self._field(line)
                else:
                    event = self._dispatch()
                    if event is not None:
                        events.append(event)
        except UnicodeDecodeError as exc:
            self.error = exc
        return events

    def finish(self) -> None:
        """The end of the body: the bytes after the last line end are read as a line
        (raising if they are not UTF-8), and an unfinished event is dropped."""
        if self.error is not None:
            raise self.error
        buffer, self._buffer = self._buffer, b""
        if buffer:
            line = buffer.decode("utf-8")
            if line:
                self._field(line)

    def _field(self, line: str) -> None:
        if line[0] == ":":
            return  # a comment
        name, _, value = line.partition(":")
        if value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry":
            with suppress(ValueError):
                self._retry = int(value)

    def _dispatch(self) -> SSEEvent | None:
        data = self._data
        if not self._event and not data and not self._last_id and self._retry is None:
            return None
        event = (self._event or None, "\n".join(data) if len(data) != 1 else data[0])
        self._event = None
        self._data = []
        self._retry = None
        return event
