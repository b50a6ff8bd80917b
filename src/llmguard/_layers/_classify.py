"""Which failures are worth another try, here or somewhere else."""

from __future__ import annotations

from .._errors import (
    BudgetExceeded,
    CircuitOpen,
    ConfigurationError,
    DeadlineExceeded,
    LLMGuardError,
    OutputValidationError,
    ProviderError,
    UnknownPrice,
)

__all__ = ["NEVER_RETRIED", "is_retryable", "triggers_fallback"]

NEVER_RETRIED: tuple[type[BaseException], ...] = (
    BudgetExceeded,
    UnknownPrice,
    OutputValidationError,
    ConfigurationError,
)
"""Never retried, whatever the ``retry=`` strategy says: trying again cannot help (a
budget refusal would only be refused again; structured output re-asks by itself)."""


def is_retryable(error: BaseException) -> bool:
    """Whether trying the same call again may succeed.

    True for a ``ProviderError`` marked ``retryable`` (timeouts, connection errors,
    408/409/429/5xx; never 400/401/403/404/422, a refusal or malformed output), for a
    ``DeadlineExceeded`` (a per-attempt deadline: the total deadline of a call is not
    seen as an error inside it), and for the builtin ``TimeoutError`` and
    ``ConnectionError`` that code outside llmguard raises. False for everything else.

    >>> is_retryable(ProviderError("overloaded", status_code=503))
    True
    >>> is_retryable(ProviderError("bad request", status_code=400))
    False
    """
    if isinstance(error, ProviderError):
        return error.retryable
    if isinstance(error, DeadlineExceeded):
        return True
    if isinstance(error, LLMGuardError):
        return False
    return isinstance(error, TimeoutError | ConnectionError)


def triggers_fallback(error: BaseException) -> bool:
    """The default fallback trigger: a retryable failure (``is_retryable``) or an open
    circuit (``CircuitOpen``). A non-retryable error (a 400, a budget refusal) is raised."""
    return is_retryable(error) or isinstance(error, CircuitOpen)
