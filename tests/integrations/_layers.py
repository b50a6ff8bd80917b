"""A tiny layer that refuses every call, standing in for Budget and CircuitBreaker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta

from llmguard import (
    BaseLayer,
    BudgetExceeded,
    EventStream,
    Handler,
    Request,
    Response,
    StreamHandler,
)


class Refuse(BaseLayer):
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def complete(self, request: Request, call_next: Handler) -> Response:
        raise self.error

    @asynccontextmanager
    async def stream(
        self, request: Request, call_next: StreamHandler
    ) -> AsyncIterator[EventStream]:  # type: ignore[override]
        raise self.error
        yield  # pragma: no cover


def budget_refusal(reset_in: float = 42.2) -> BudgetExceeded:
    return BudgetExceeded(
        scope="user:alice",
        limit=1000,
        used=990,
        remaining=10,
        unit="tokens",
        reset_at=datetime.now(UTC) + timedelta(seconds=reset_in),
    )
