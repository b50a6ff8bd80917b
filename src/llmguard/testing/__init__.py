"""What users need to test their own code that uses llmguard.

``FakeProvider`` (scripted replies, streams, failures, a request log),
``capture_records()``, ``ManualClock``, and a pytest plugin with the fixtures
``fake_provider``, ``guard``, ``memory_store``, ``llm_records`` and ``manual_clock``.
"""

from ._capture import capture_records
from ._clock import ManualClock
from ._fake import (
    FakeProvider,
    FakeReply,
    FakeRule,
    FakeScriptExhausted,
    FakeStream,
    FakeStreamLog,
)

__all__ = [
    "FakeProvider",
    "FakeReply",
    "FakeRule",
    "FakeScriptExhausted",
    "FakeStream",
    "FakeStreamLog",
    "ManualClock",
    "capture_records",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
