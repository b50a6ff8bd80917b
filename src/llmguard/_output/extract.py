"""Tolerant extraction: find the JSON value in a model's answer, guessing nothing.

What is tolerated: the answer wrapped in a code fence (```` ```json ```` or bare
```` ``` ````), prose before or after it, an object or array somewhere inside text,
and trailing commas of the common kind (a comma followed only by whitespace and then
``}`` or ``]``). What is not: single quotes, unquoted keys, comments, unclosed
brackets, ``True``/``None``, ``NaN``: a value is only ever a piece of the answer, at
most with such trailing commas removed, never something reconstructed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

__all__ = ["json_candidates", "strip_trailing_commas"]

_FENCE = re.compile(r"^[ \t]*```[ \t]*([\w+.-]*)[^\n]*\n(.*?)(?:^[ \t]*```|\Z)", re.S | re.M)
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[{}\[\],"]', re.S)
_OPEN = re.compile(r"[{\[]")
_MAX_STARTS = 64  # bound on the positions tried inside prose (pathological texts)


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _is_json(text: str) -> bool:
    try:
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        return False
    return True


def _scan(text: str, start: int) -> tuple[int, str] | None:
    """From the bracket at ``start``: the end of its balanced region and the region
    with trailing commas removed, or ``None`` if the brackets do not balance."""
    closers: list[str] = []
    commas: list[int] = []
    comma = -1
    for match in _TOKEN.finditer(text, start):
        token = match.group()
        first = token[0]
        if first == '"':
            if len(token) == 1:
                return None  # an unterminated string
        elif first == "{":
            closers.append("}")
        elif first == "[":
            closers.append("]")
        elif first == ",":
            comma = match.start()
            continue
        else:
            if not closers or closers.pop() != first:
                return None
            if comma >= 0 and not text[comma + 1 : match.start()].strip():
                commas.append(comma)
            if not closers:
                end = match.end()
                if not commas:
                    return end, text[start:end]
                pieces, last = [], start
                for position in commas:
                    pieces.append(text[last:position])
                    last = position + 1
                pieces.append(text[last:end])
                return end, "".join(pieces)
        comma = -1
    return None


def strip_trailing_commas(text: str) -> str | None:
    """``text`` (one bracketed JSON value) with trailing commas removed, if it is JSON then."""
    stripped = text.strip()
    if stripped[:1] not in ("{", "["):
        return None
    scanned = _scan(stripped, 0)
    if scanned is None or scanned[0] != len(stripped) or not _is_json(scanned[1]):
        return None
    return scanned[1]


def _whole(text: str) -> str | None:
    stripped = text.strip()
    if stripped and _is_json(stripped):
        return stripped
    return strip_trailing_commas(stripped)


def json_candidates(text: str) -> Iterator[str]:
    """The JSON texts in ``text``, best first; each parses as JSON.

    The whole answer if it is JSON (then nothing else); else the body of each code
    fence (``json``-labelled first); then each top-level object or array inside the
    prose, the largest first.
    """
    whole = _whole(text)
    if whole is not None:
        yield whole
        return
    seen: set[str] = set()
    fences = sorted(_FENCE.finditer(text), key=lambda m: m.group(1).lower() != "json")
    for fence in fences:
        body = _whole(fence.group(2))
        if body is not None and body not in seen:
            seen.add(body)
            yield body
    regions: list[tuple[int, str]] = []
    position = tries = 0
    for match in _OPEN.finditer(text):
        start = match.start()
        if start < position:
            continue
        tries += 1
        if tries > _MAX_STARTS:
            break
        scanned = _scan(text, start)
        if scanned is not None and _is_json(scanned[1]):
            regions.append((start, scanned[1]))
            position = scanned[0]
    regions.sort(key=lambda region: (-len(region[1]), region[0]))
    for _, candidate in regions:
        if candidate not in seen:
            seen.add(candidate)
            yield candidate
