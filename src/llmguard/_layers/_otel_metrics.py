"""The metric instruments of the ``OpenTelemetry`` layer, and one call's measurements.

GenAI client semantic conventions: ``gen_ai.client.token.usage``,
``gen_ai.client.operation.duration`` and ``gen_ai.client.operation.time_to_first_chunk``
(histograms, with the bucket boundaries the conventions advise). llmguard's own
counters: ``llmguard.cost``, ``llmguard.cache.hits``/``misses``,
``llmguard.budget.refusals``, ``llmguard.retries``, ``llmguard.fallbacks``,
``llmguard.breaker.state_changes``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from .._errors import BudgetExceeded, UnknownPrice
from ._otel_attrs import OPERATION, Attributes, CallFacts

if TYPE_CHECKING:
    from opentelemetry.metrics import Meter

    from .._state import CallState

__all__ = ["Instruments"]

TOKEN_BUCKETS: Final = (
    1,
    4,
    16,
    64,
    256,
    1024,
    4096,
    16384,
    65536,
    262144,
    1048576,
    4194304,
    16777216,
    67108864,
)
SECONDS_BUCKETS: Final = (
    0.01,
    0.02,
    0.04,
    0.08,
    0.16,
    0.32,
    0.64,
    1.28,
    2.56,
    5.12,
    10.24,
    20.48,
    40.96,
    81.92,
)

_INPUT: Final = {"gen_ai.token.type": "input"}
_OUTPUT: Final = {"gen_ai.token.type": "output"}

MetricAttributes = Mapping[str, Any]
_SetKey = tuple[str, str, str | None, str | None]  # provider, models, endpoint
_AttributeSets = tuple[MetricAttributes, MetricAttributes, MetricAttributes]
_MAX_SETS: Final = 256  # distinct (provider, model, response model, endpoint) kept


def _attribute_sets(key: _SetKey) -> _AttributeSets:
    """The attributes of a call's points: the base set, and the token usage's two."""
    provider, request_model, response_model, endpoint = key
    base: Attributes = {
        "gen_ai.operation.name": OPERATION,
        "gen_ai.provider.name": provider,
        "gen_ai.request.model": request_model,
    }
    if response_model is not None:
        base["gen_ai.response.model"] = response_model
    if endpoint is not None:
        base["llmguard.endpoint"] = endpoint
    return base, base | _INPUT, base | _OUTPUT


class Instruments:
    """Every instrument, created once per layer from its meter."""

    __slots__ = (
        "_sets",
        "breaker_changes",
        "budget_refusals",
        "cache_hits",
        "cache_misses",
        "cost",
        "duration",
        "fallbacks",
        "retries",
        "time_to_first_chunk",
        "token_usage",
    )

    def __init__(self, meter: Meter) -> None:
        # Attribute sets built once per (provider, model, response model, endpoint) and
        # passed to every record; never changed once built (the SDK copies what it keeps;
        # plain dicts: the SDK checks and copies a dict faster than a read-only view).
        self._sets: dict[_SetKey, _AttributeSets] = {}
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage",
            unit="{token}",
            description="Number of input and output tokens used.",
            explicit_bucket_boundaries_advisory=TOKEN_BUCKETS,
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration",
            unit="s",
            description="GenAI operation duration.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            "gen_ai.client.operation.time_to_first_chunk",
            unit="s",
            description="Time to receive the first chunk of a stream, from the call's start.",
            explicit_bucket_boundaries_advisory=SECONDS_BUCKETS,
        )
        self.cost = meter.create_counter(
            "llmguard.cost", unit="USD", description="What priced calls cost, in US dollars."
        )
        self.cache_hits = meter.create_counter(
            "llmguard.cache.hits", unit="{call}", description="Calls answered from the cache."
        )
        self.cache_misses = meter.create_counter(
            "llmguard.cache.misses",
            unit="{call}",
            description="Calls the cache looked up and did not find.",
        )
        self.budget_refusals = meter.create_counter(
            "llmguard.budget.refusals",
            unit="{call}",
            description="Calls a budget refused (BudgetExceeded, UnknownPrice).",
        )
        self.retries = meter.create_counter(
            "llmguard.retries",
            unit="{attempt}",
            description="Attempts that retried a failed attempt on the same provider and model.",
        )
        self.fallbacks = meter.create_counter(
            "llmguard.fallbacks",
            unit="{call}",
            description="Calls that left their primary target for a fallback.",
        )
        self.breaker_changes = meter.create_counter(
            "llmguard.breaker.state_changes",
            unit="{change}",
            description="Circuit breaker transitions seen by guarded calls.",
        )

    def record(self, state: CallState, facts: CallFacts, error: BaseException | None) -> None:
        """Record one finished call."""
        key = (facts.provider, facts.request_model, facts.response_model, state.context.endpoint)
        sets = self._sets.get(key)
        if sets is None:
            if len(self._sets) >= _MAX_SETS:
                self._sets.clear()  # many endpoints or models: start over, stay bounded
            sets = self._sets[key] = _attribute_sets(key)
        base, as_input, as_output = sets
        usage = facts.usage
        if usage is not None:
            self.token_usage.record(usage.input_tokens, as_input)
            self.token_usage.record(usage.output_tokens, as_output)
        if facts.time_to_first_chunk_s is not None:
            self.time_to_first_chunk.record(facts.time_to_first_chunk_s, base)
        if facts.cost_micros:
            self.cost.add(facts.cost_micros / 1_000_000, base)
        if facts.error_type is None:
            self.duration.record(facts.duration_s, base)
        else:
            self.duration.record(facts.duration_s, {**base, "error.type": facts.error_type})
        self._events(state, facts, error, base)

    def _events(
        self,
        state: CallState,
        facts: CallFacts,
        error: BaseException | None,
        base: MetricAttributes,
    ) -> None:
        cache = state.cache
        if cache == "hit":
            self.cache_hits.add(1, base)
        elif cache == "miss":
            self.cache_misses.add(1, base)
        if facts.retries:
            self.retries.add(facts.retries, base)
        if state.fallback_reasons:
            target = {"llmguard.fallback": state.fallback} if state.fallback else {}
            self.fallbacks.add(1, {**base, **target})
        if isinstance(error, BudgetExceeded | UnknownPrice):
            self.budget_refusals.add(1, {**base, "error.type": facts.error_type})
        for key, old, new in state.extra.get("circuit_transitions", ()):
            self.breaker_changes.add(
                1,
                {
                    "llmguard.breaker.key": key,
                    "llmguard.breaker.from": old,
                    "llmguard.breaker.to": new,
                },
            )
