"""The lean HTTP client's responses (``_lean_http``): headers looked up as httpx looks
them up, the body read from its connection on demand and decoded (gzip, deflate) as
httpx decodes it, the text in the content type's charset. A body read to its end gives
its connection back to the pool; any other ending closes the connection.
"""

from __future__ import annotations

import codecs
import zlib
from collections.abc import Iterator, Mapping
from typing import Any

import h11

from ._lean_errors import DecodingError
from ._lean_pool import Connection, Pool

__all__ = ["Headers", "LeanResponse"]


class Headers(Mapping[str, str]):
    """Response headers: looked up case-insensitively; repeated ones joined by ``, ``."""

    __slots__ = ("_map", "raw")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw
        joined: dict[str, str] = {}
        for name, value in raw:
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            joined[key] = f"{joined[key]}, {text}" if key in joined else text
        self._map = joined

    def __getitem__(self, name: str) -> str:
        return self._map[name.lower()]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._map

    def __iter__(self) -> Iterator[str]:
        return iter(self._map)

    def __len__(self) -> int:
        return len(self._map)

    def __repr__(self) -> str:
        return f"Headers({sorted(self._map)!r})"  # names only: values may be secrets


class _Decoder:
    """The ``Content-Encoding`` chain (gzip, deflate) undone, as httpx decodes it."""

    __slots__ = ("_steps",)

    def __init__(self, encodings: str) -> None:
        names = [name.strip().lower() for name in encodings.split(",")]
        self._steps: list[Any] = [
            _DeflateStep() if name == "deflate" else zlib.decompressobj(zlib.MAX_WBITS | 16)
            for name in reversed(names)
            if name in ("gzip", "x-gzip", "deflate")
        ]

    def decode(self, data: bytes) -> bytes:
        try:
            for step in self._steps:
                data = step.decompress(data)
        except zlib.error as exc:
            raise DecodingError(f"could not decode the body: {exc}") from exc
        return data

    def flush(self) -> bytes:
        data = b""
        try:
            for step in self._steps:
                data = step.decompress(data) + step.flush()
        except zlib.error as exc:  # pragma: no cover - zlib reports bad data in decompress
            raise DecodingError(f"could not decode the body: {exc}") from exc
        return data


class _DeflateStep:
    """zlib-wrapped deflate, or raw deflate when the first bytes say so (as httpx)."""

    __slots__ = ("_first", "_obj")

    def __init__(self) -> None:
        self._first = True
        self._obj = zlib.decompressobj()

    def decompress(self, data: bytes) -> bytes:
        was_first, self._first = self._first, False
        try:
            return self._obj.decompress(data)
        except zlib.error:
            if not was_first:
                raise
            self._obj = zlib.decompressobj(-zlib.MAX_WBITS)
            return self._obj.decompress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


class LeanResponse:
    """An HTTP/1.1 response whose body is read from its connection on demand."""

    http_version = "HTTP/1.1"

    def __init__(
        self, status: int, headers: Headers, connection: Connection, pool: Pool, read: float | None
    ) -> None:
        self.status_code = status
        self.headers = headers
        self._connection: Connection | None = connection
        self._pool = pool
        self._read_timeout = read
        self._content: bytes | None = None
        encoding = headers.get("content-encoding")
        self._decoder = _Decoder(encoding) if encoding else None
        self.is_closed = False

    def __repr__(self) -> str:
        return f"<LeanResponse [{self.status_code}]>"

    async def _next_raw(self) -> bytes | None:
        """The next piece of the body as sent; ``None`` at its end (connection released)."""
        connection = self._connection
        if connection is None:
            return None
        try:
            event = await connection.next_event(self._read_timeout)
        except BaseException:
            await self._drop()
            raise
        if type(event) is h11.Data:
            return bytes(event.data)
        self._connection = None  # EndOfMessage: the exchange is over
        await self._pool.release(connection)
        return None

    async def _next(self) -> bytes | None:
        decoder = self._decoder
        while True:
            raw = await self._next_raw()
            if raw is None:
                if decoder is None:
                    return None
                self._decoder = None
                rest = decoder.flush()
                return rest or None
            data = decoder.decode(raw) if decoder is not None else raw
            if data:
                return data

    def aiter_bytes(self) -> _ByteIterator:
        """The decoded body, piece by piece as it arrives."""
        return _ByteIterator(self)

    async def aread(self) -> bytes:
        """Read the whole body (decoded); kept as ``content``."""
        if self._content is None:
            pieces = []
            try:
                while (piece := await self._next()) is not None:
                    pieces.append(piece)
            except BaseException:
                await self._drop()
                raise
            self._content = b"".join(pieces)
            self.is_closed = True
        return self._content

    @property
    def content(self) -> bytes:
        """The body; read it first (``aread``, or ``send(stream=False)``)."""
        if self._content is None:
            raise RuntimeError("the response body was not read (await aread() first)")
        return self._content

    @property
    def text(self) -> str:
        """The body as text: the content type's charset, else UTF-8 (as httpx2)."""
        return self.content.decode(_charset(self.headers.get("content-type", "")), "replace")

    async def _drop(self) -> None:
        """End early: the connection is closed, never reused."""
        self.is_closed = True
        self._decoder = None
        connection, self._connection = self._connection, None
        if connection is not None:
            await self._pool.discard(connection)

    async def aclose(self) -> None:
        """Close the response (a body not read to its end closes the connection)."""
        await self._drop()


class _ByteIterator:
    """``aiter_bytes()``: an async iterator with ``aclose``, not an async generator (so
    no event loop has one to finalise)."""

    __slots__ = ("_response",)

    def __init__(self, response: LeanResponse) -> None:
        self._response = response

    def __aiter__(self) -> _ByteIterator:
        return self

    async def __anext__(self) -> bytes:
        data = await self._response._next()
        if data is None:
            self._response.is_closed = True
            raise StopAsyncIteration
        return data

    async def aclose(self) -> None:
        """Stop reading: the response closes (early: with its connection)."""
        await self._response.aclose()


def _charset(content_type: str) -> str:
    for part in content_type.split(";")[1:]:
        name, _, value = part.partition("=")
        if name.strip().lower() == "charset":
            charset = value.strip().strip("\"'")
            try:
                return codecs.lookup(charset).name
            except LookupError:
                break
    return "utf-8"
