"""llmguard: composable guards that make LLM calls safe in a production backend.

    your code -> Guard(provider, layers=[...]) -> layer -> layer -> ... -> Provider

See docs/concepts.md for the picture, and ``llmguard.testing`` for test doubles.
"""

from contextlib import suppress

from ._assemble import estimate_usage
from ._clock import AnyioClock, Clock, SystemClock
from ._context import CallContext, context, current_context, restore_context, snapshot
from ._errors import (
    BudgetExceeded,
    CircuitOpen,
    ConfigurationError,
    DeadlineExceeded,
    LLMGuardError,
    MalformedResponse,
    OutputValidationError,
    ProviderConnectionError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
    Refusal,
    StoreUnavailable,
    StreamTimeout,
    SyncUsageError,
    ToolError,
    ToolLoopLimit,
)
from ._guard import Guard, RequestOptions
from ._layer import BaseLayer, EventStream, Handler, Layer, Provider, StreamHandler, StreamOpener
from ._layers.observe import Observe
from ._pipeline import GuardedEvents, GuardStream
from ._providers.function import FunctionProvider
from ._providers.openai import Embeddings, OpenAIProvider, RetriesMultiplyWarning
from ._state import Attempt, CallRecord, CallState, current_call
from ._stores._roles import BudgetLedger, CacheStore, LedgerResult, SharedState, Versioned, Window
from ._stores.memory import MemoryStore
from ._sync import SyncEvents, SyncGuard
from ._types import (
    Finish,
    Message,
    Request,
    Response,
    Role,
    StreamEvent,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    ToolSpec,
    Usage,
    UsageUpdate,
)
from ._wrap import Advice, Invocation, around, timeout

__version__ = "0.1.0.dev0"

__all__ = [
    "Advice",
    "AnyioClock",
    "Attempt",
    "BaseLayer",
    "BudgetExceeded",
    "BudgetLedger",
    "CacheStore",
    "CallContext",
    "CallRecord",
    "CallState",
    "CircuitOpen",
    "Clock",
    "ConfigurationError",
    "DeadlineExceeded",
    "Embeddings",
    "EventStream",
    "Finish",
    "FunctionProvider",
    "Guard",
    "GuardStream",
    "GuardedEvents",
    "Handler",
    "Invocation",
    "LLMGuardError",
    "Layer",
    "LedgerResult",
    "MalformedResponse",
    "MemoryStore",
    "Message",
    "Observe",
    "OpenAIProvider",
    "OutputValidationError",
    "Provider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeout",
    "RateLimited",
    "Refusal",
    "Request",
    "RequestOptions",
    "Response",
    "RetriesMultiplyWarning",
    "Role",
    "SharedState",
    "StoreUnavailable",
    "StreamEvent",
    "StreamHandler",
    "StreamOpener",
    "StreamTimeout",
    "SyncEvents",
    "SyncGuard",
    "SyncUsageError",
    "SystemClock",
    "TextDelta",
    "ToolCall",
    "ToolCallDelta",
    "ToolError",
    "ToolLoopLimit",
    "ToolSpec",
    "Usage",
    "UsageUpdate",
    "Versioned",
    "Window",
    "__version__",
    "around",
    "context",
    "current_call",
    "current_context",
    "estimate_usage",
    "restore_context",
    "snapshot",
    "timeout",
]


def _rehome() -> None:
    # Reprs and docs read ``llmguard.Guard``, not ``llmguard._guard.Guard``.
    for name in __all__:
        obj = globals()[name]
        if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__code__")):
            with suppress(AttributeError, TypeError):  # builtins refuse; leave them
                obj.__module__ = __name__


_rehome()
del _rehome
