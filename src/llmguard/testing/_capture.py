"""``capture_records()``: collect the ``CallRecord`` of every observed call in a block."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from .._layers.observe import RECORD_LOGGER
from .._state import CallRecord

__all__ = ["capture_records"]


class _Collector(logging.Handler):
    def __init__(self, records: list[CallRecord]) -> None:
        super().__init__(level=logging.DEBUG)
        self._records = records
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        call = getattr(record, "llmguard_record", None)
        if isinstance(call, CallRecord):
            with self._guard:
                self._records.append(call)


@contextmanager
def capture_records() -> Iterator[list[CallRecord]]:
    """Collect the records of every ``Observe`` layer logging to ``llmguard.calls``
    (or a child of it) while the block runs, from any thread.

    >>> with capture_records() as records:
    ...     pass
    >>> records
    []
    """
    logger = logging.getLogger(RECORD_LOGGER)
    records: list[CallRecord] = []
    handler = _Collector(records)
    previous = logger.level
    logger.addHandler(handler)
    if not logger.isEnabledFor(logging.DEBUG):
        logger.setLevel(logging.DEBUG)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(previous)
