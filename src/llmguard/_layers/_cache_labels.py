"""What a call's record says about the ``Cache`` layer: the status (``"hit"``,
``"miss"``, ``"refresh"``, ``"bypass"``) and, on a hit, the tier and a zero cost."""

from __future__ import annotations

from .._cache_codec import CachedAnswer
from .._fast_init import replace
from .._state import CallState


def _label(state: CallState | None, status: str) -> None:
    if state is None:
        return
    if status != "hit" and "cache_store_error" in state.extra:
        status = "bypass"
    state.cache = status


def _hit(state: CallState | None, answer: CachedAnswer, tier: str) -> CachedAnswer:
    """Note a hit on the call and mark the answer cached, at zero cost."""
    if state is not None:
        state.cache = "hit"
        state.cost_micros = 0
        state.extra["cache_tier"] = tier
    response = answer.response
    if response.cached and response.cost_micros == 0:
        return answer
    return CachedAnswer(replace(response, cached=True, cost_micros=0, raw=None), answer.events)
