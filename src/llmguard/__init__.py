"""llmguard: composable guards that make LLM calls safe in a production backend.

    your code -> Guard(provider, layers=[...]) -> layer -> layer -> ... -> Provider

See docs/concepts.md for the picture, and ``llmguard.testing`` for test doubles.

The core (the Guard, layers, data, errors, context, Observe, the memory store) is
imported here; every other public name (budgets, cache, fallback, tools, structured
output, SSE, the SQLite and Redis stores…) loads on first use, so ``import llmguard``
stays fast. Both kinds are in ``__all__`` and visible to type checkers.
"""

from contextlib import suppress
from importlib import import_module
from typing import TYPE_CHECKING, Any

from ._assemble import estimate_usage
from ._clock import AnyioClock, Clock, SystemClock
from ._context import CallContext, context, current_context, restore_context, snapshot
from ._errors import (
    BudgetExceeded,
    CircuitOpen,
    ClientDisconnected,
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
    SSEError,
    StoreUnavailable,
    StreamTimeout,
    SyncUsageError,
    ToolError,
    ToolLoopLimit,
    UnknownPrice,
)
from ._guard import Guard, RequestOptions
from ._guard_stream import GuardedEvents, GuardStream
from ._layer import BaseLayer, EventStream, Handler, Layer, Provider, StreamHandler, StreamOpener
from ._layers.observe import Observe
from ._providers.function import FunctionProvider
from ._state import Attempt, CallRecord, CallState, current_call
from ._types import (
    Finish,
    Message,
    RefusalDelta,
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

if TYPE_CHECKING:
    from ._budget_index import budget_report
    from ._budget_limits import BudgetAlert, BudgetStatus, Limit
    from ._cache_codec import CacheCodec, JSONCodec, PydanticCodec
    from ._cache_core import cache_options
    from ._cache_decorator import cache
    from ._cache_key import IGNORED_EXTRAS as CACHE_IGNORED_EXTRAS
    from ._cost import Price, Pricing
    from ._layers._classify import is_retryable
    from ._layers.breaker import CircuitBreaker, CircuitState, circuit_breaker
    from ._layers.budget import Budget, budget
    from ._layers.cache import Cache
    from ._layers.deadlines import Deadlines, StreamTimeouts
    from ._layers.fallback import Fallback, FallbackTarget, fallback
    from ._layers.otel import OpenTelemetry
    from ._layers.pseudonymize import ContextField, Pseudonymize
    from ._layers.retry import Retry, retry
    from ._layers.retry_strategies import (
        retry_if_retryable,
        retry_if_status,
        stop_after_total,
        wait_full_jitter,
    )
    from ._output.stream import StructuredPartials, StructuredStream
    from ._output.structured import StructuredOutput, structured_output
    from ._output.sync import SyncPartials
    from ._output.types import (
        OutputMode,
        OutputSchema,
        StructuredMode,
        StructuredOutputSupport,
        ValidatesJSON,
        output_schema,
    )
    from ._providers.openai import Embeddings, OpenAIProvider, RetriesMultiplyWarning
    from ._router import Route, Router
    from ._semantic import Semantic
    from ._sse import SSEStream, sse
    from ._sse_parse import aparse_sse, parse_sse
    from ._stores._roles import (
        BudgetLedger,
        CacheStore,
        LedgerResult,
        SharedState,
        StoreErrorPolicy,
        Versioned,
        Window,
    )
    from ._stores.memory import MemoryStore, PerProcessStoreWarning
    from ._stores.redis import RedisStore
    from ._stores.sqlite import SQLiteStore
    from ._sync import SyncEvents, SyncGuard
    from ._tools.decorator import Tool, tool
    from ._tools.loop import ToolRunOptions
    from ._tools.results import ToolFinished, ToolLoopEvent, ToolResult, ToolRunResult, ToolStarted
    from ._tools.stream import ToolLoopEvents, ToolLoopStream
    from ._tools.sync import SyncToolEvents
    from ._tools.toolbox import ApprovalCallback, ResultHook, Toolbox

# name -> (module, attribute): loaded by __getattr__ on first use.
_LAZY: dict[str, tuple[str, str]] = {
    "BudgetLedger": ("._stores._roles", "BudgetLedger"),
    "CacheStore": ("._stores._roles", "CacheStore"),
    "LedgerResult": ("._stores._roles", "LedgerResult"),
    "SharedState": ("._stores._roles", "SharedState"),
    "StoreErrorPolicy": ("._stores._roles", "StoreErrorPolicy"),
    "Versioned": ("._stores._roles", "Versioned"),
    "Window": ("._stores._roles", "Window"),
    "MemoryStore": ("._stores.memory", "MemoryStore"),
    "PerProcessStoreWarning": ("._stores.memory", "PerProcessStoreWarning"),
    "aparse_sse": ("._sse_parse", "aparse_sse"),
    "ApprovalCallback": ("._tools.toolbox", "ApprovalCallback"),
    "Budget": ("._layers.budget", "Budget"),
    "budget": ("._layers.budget", "budget"),
    "budget_report": ("._budget_index", "budget_report"),
    "BudgetAlert": ("._budget_limits", "BudgetAlert"),
    "BudgetStatus": ("._budget_limits", "BudgetStatus"),
    "cache": ("._cache_decorator", "cache"),
    "Cache": ("._layers.cache", "Cache"),
    "CACHE_IGNORED_EXTRAS": ("._cache_key", "IGNORED_EXTRAS"),
    "cache_options": ("._cache_core", "cache_options"),
    "CacheCodec": ("._cache_codec", "CacheCodec"),
    "circuit_breaker": ("._layers.breaker", "circuit_breaker"),
    "CircuitBreaker": ("._layers.breaker", "CircuitBreaker"),
    "CircuitState": ("._layers.breaker", "CircuitState"),
    "Deadlines": ("._layers.deadlines", "Deadlines"),
    "Embeddings": ("._providers.openai", "Embeddings"),
    "Fallback": ("._layers.fallback", "Fallback"),
    "fallback": ("._layers.fallback", "fallback"),
    "FallbackTarget": ("._layers.fallback", "FallbackTarget"),
    "is_retryable": ("._layers._classify", "is_retryable"),
    "JSONCodec": ("._cache_codec", "JSONCodec"),
    "Limit": ("._budget_limits", "Limit"),
    "OpenAIProvider": ("._providers.openai", "OpenAIProvider"),
    "OpenTelemetry": ("._layers.otel", "OpenTelemetry"),
    "Pseudonymize": ("._layers.pseudonymize", "Pseudonymize"),
    "ContextField": ("._layers.pseudonymize", "ContextField"),
    "output_schema": ("._output.types", "output_schema"),
    "OutputMode": ("._output.types", "OutputMode"),
    "OutputSchema": ("._output.types", "OutputSchema"),
    "parse_sse": ("._sse_parse", "parse_sse"),
    "Price": ("._cost", "Price"),
    "Pricing": ("._cost", "Pricing"),
    "PydanticCodec": ("._cache_codec", "PydanticCodec"),
    "RedisStore": ("._stores.redis", "RedisStore"),
    "ResultHook": ("._tools.toolbox", "ResultHook"),
    "RetriesMultiplyWarning": ("._providers.openai", "RetriesMultiplyWarning"),
    "Retry": ("._layers.retry", "Retry"),
    "retry": ("._layers.retry", "retry"),
    "retry_if_retryable": ("._layers.retry_strategies", "retry_if_retryable"),
    "retry_if_status": ("._layers.retry_strategies", "retry_if_status"),
    "Route": ("._router", "Route"),
    "Router": ("._router", "Router"),
    "Semantic": ("._semantic", "Semantic"),
    "SQLiteStore": ("._stores.sqlite", "SQLiteStore"),
    "sse": ("._sse", "sse"),
    "SSEStream": ("._sse", "SSEStream"),
    "stop_after_total": ("._layers.retry_strategies", "stop_after_total"),
    "StreamTimeouts": ("._layers.deadlines", "StreamTimeouts"),
    "structured_output": ("._output.structured", "structured_output"),
    "StructuredMode": ("._output.types", "StructuredMode"),
    "StructuredOutput": ("._output.structured", "StructuredOutput"),
    "StructuredOutputSupport": ("._output.types", "StructuredOutputSupport"),
    "StructuredPartials": ("._output.stream", "StructuredPartials"),
    "StructuredStream": ("._output.stream", "StructuredStream"),
    "SyncEvents": ("._sync", "SyncEvents"),
    "SyncGuard": ("._sync", "SyncGuard"),
    "SyncPartials": ("._output.sync", "SyncPartials"),
    "SyncToolEvents": ("._tools.sync", "SyncToolEvents"),
    "Tool": ("._tools.decorator", "Tool"),
    "tool": ("._tools.decorator", "tool"),
    "Toolbox": ("._tools.toolbox", "Toolbox"),
    "ToolFinished": ("._tools.results", "ToolFinished"),
    "ToolLoopEvent": ("._tools.results", "ToolLoopEvent"),
    "ToolLoopEvents": ("._tools.stream", "ToolLoopEvents"),
    "ToolLoopStream": ("._tools.stream", "ToolLoopStream"),
    "ToolResult": ("._tools.results", "ToolResult"),
    "ToolRunOptions": ("._tools.loop", "ToolRunOptions"),
    "ToolRunResult": ("._tools.results", "ToolRunResult"),
    "ToolStarted": ("._tools.results", "ToolStarted"),
    "ValidatesJSON": ("._output.types", "ValidatesJSON"),
    "wait_full_jitter": ("._layers.retry_strategies", "wait_full_jitter"),
}


def __getattr__(name: str) -> Any:
    spec = _LAZY.get(name)
    if spec is None:
        raise AttributeError(f"module 'llmguard' has no attribute {name!r}")
    value = getattr(import_module(spec[0], __name__), spec[1])
    if isinstance(value, type) or (callable(value) and hasattr(value, "__code__")):
        with suppress(AttributeError, TypeError):
            value.__module__ = __name__
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0.dev0"

__all__ = [
    "Advice",
    "AnyioClock",
    "ApprovalCallback",
    "Attempt",
    "BaseLayer",
    "Budget",
    "BudgetAlert",
    "BudgetExceeded",
    "BudgetLedger",
    "BudgetStatus",
    "CACHE_IGNORED_EXTRAS",
    "Cache",
    "CacheCodec",
    "CacheStore",
    "CallContext",
    "CallRecord",
    "CallState",
    "CircuitBreaker",
    "CircuitOpen",
    "CircuitState",
    "ClientDisconnected",
    "Clock",
    "ConfigurationError",
    "ContextField",
    "DeadlineExceeded",
    "Deadlines",
    "Embeddings",
    "EventStream",
    "Fallback",
    "FallbackTarget",
    "Finish",
    "FunctionProvider",
    "Guard",
    "GuardStream",
    "GuardedEvents",
    "Handler",
    "Invocation",
    "JSONCodec",
    "LLMGuardError",
    "Layer",
    "LedgerResult",
    "Limit",
    "MalformedResponse",
    "MemoryStore",
    "Message",
    "Observe",
    "OpenAIProvider",
    "OpenTelemetry",
    "OutputMode",
    "OutputSchema",
    "OutputValidationError",
    "PerProcessStoreWarning",
    "Price",
    "Pricing",
    "Provider",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderTimeout",
    "Pseudonymize",
    "PydanticCodec",
    "RateLimited",
    "RedisStore",
    "Refusal",
    "RefusalDelta",
    "Request",
    "RequestOptions",
    "Response",
    "ResultHook",
    "RetriesMultiplyWarning",
    "Retry",
    "Role",
    "Route",
    "Router",
    "SQLiteStore",
    "SSEError",
    "SSEStream",
    "Semantic",
    "SharedState",
    "StoreErrorPolicy",
    "StoreUnavailable",
    "StreamEvent",
    "StreamHandler",
    "StreamOpener",
    "StreamTimeout",
    "StreamTimeouts",
    "StructuredMode",
    "StructuredOutput",
    "StructuredOutputSupport",
    "StructuredPartials",
    "StructuredStream",
    "SyncEvents",
    "SyncGuard",
    "SyncPartials",
    "SyncToolEvents",
    "SyncUsageError",
    "SystemClock",
    "TextDelta",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolError",
    "ToolFinished",
    "ToolLoopEvent",
    "ToolLoopEvents",
    "ToolLoopLimit",
    "ToolLoopStream",
    "ToolResult",
    "ToolRunOptions",
    "ToolRunResult",
    "ToolSpec",
    "ToolStarted",
    "Toolbox",
    "UnknownPrice",
    "Usage",
    "UsageUpdate",
    "ValidatesJSON",
    "Versioned",
    "Window",
    "__version__",
    "aparse_sse",
    "around",
    "budget",
    "budget_report",
    "cache",
    "cache_options",
    "circuit_breaker",
    "context",
    "current_call",
    "current_context",
    "estimate_usage",
    "fallback",
    "is_retryable",
    "output_schema",
    "parse_sse",
    "restore_context",
    "retry",
    "retry_if_retryable",
    "retry_if_status",
    "snapshot",
    "sse",
    "stop_after_total",
    "structured_output",
    "timeout",
    "tool",
    "wait_full_jitter",
]


def _rehome() -> None:
    # Reprs and docs read ``llmguard.Guard``, not ``llmguard._guard.Guard``.
    for name in __all__:
        obj = globals().get(name)  # None for the lazily loaded names (see _LAZY)
        if isinstance(obj, type) or (callable(obj) and hasattr(obj, "__code__")):
            with suppress(AttributeError, TypeError):  # builtins refuse; leave them
                obj.__module__ = __name__


_rehome()
del _rehome
