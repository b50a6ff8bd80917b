"""What users need to test their own code that uses llmguard.

``FakeProvider`` (scripted replies, streams, failures, a request log),
``capture_records()``, ``ManualClock``, ``FakeOpenAIEndpoint`` (a fake OpenAI HTTP API
for code that calls the openai SDK, with ``WireReply`` failures and the ``Quirk`` flags
of OpenAI-compatible servers), cassettes (``RecordingTransport``, ``Cassette``), and a
pytest plugin with the fixtures ``fake_provider``, ``guard``, ``memory_store``,
``llm_records``, ``manual_clock``, ``fake_openai``, ``openai_client`` and
``openai_cassette``.
"""

from ._capture import capture_records
from ._cassette import Cassette, RecordingTransport
from ._clock import ManualClock
from ._fake import (
    FakeProvider,
    FakeReply,
    FakeRule,
    FakeScriptExhausted,
    FakeStream,
    FakeStreamLog,
)
from ._openai_endpoint import FakeOpenAIEndpoint
from ._openai_log import WireRequest, WireResponse
from ._openai_script import UnexpectedRequest, WireReply, WireRule
from ._openai_wire import Quirk

__all__ = [
    "Cassette",
    "FakeOpenAIEndpoint",
    "FakeProvider",
    "FakeReply",
    "FakeRule",
    "FakeScriptExhausted",
    "FakeStream",
    "FakeStreamLog",
    "ManualClock",
    "Quirk",
    "RecordingTransport",
    "UnexpectedRequest",
    "WireReply",
    "WireRequest",
    "WireResponse",
    "WireRule",
    "capture_records",
]

for _name in __all__:
    globals()[_name].__module__ = __name__
del _name
