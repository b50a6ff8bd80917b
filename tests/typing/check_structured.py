"""Type-checked with ``mypy --strict``: structured output used as the docs use it."""

from __future__ import annotations

from typing import Any, assert_type

from pydantic import BaseModel, TypeAdapter

import llmguard
from llmguard import Guard, Request, Response, structured_output
from llmguard.testing import FakeProvider


class Invoice(BaseModel):
    number: str
    total_cents: int


async def uses_structured() -> None:
    guard = Guard(FakeProvider(), model="m")
    invoice = await guard.structured(Invoice, user="...")
    assert_type(invoice, Invoice)
    invoices = await guard.structured(list[Invoice], user="...", retries=1, mode="json")
    assert_type(invoices, list[Invoice])
    either: TypeAdapter[int | str] = TypeAdapter(int | str)
    assert_type(await guard.structured(either, user="..."), int | str)
    await guard.structured(Invoice, user="...", mode="yaml")  # type: ignore[arg-type]
    async with guard.structured_stream(Invoice, user="...") as partials:
        async for partial in partials:
            assert_type(partial, Any)
        assert_type(partials.result, Invoice | None)
    assert_type(guard.sync.structured(Invoice, user="..."), Invoice)
    with guard.sync.structured_stream(Invoice, user="...") as blocking:
        assert_type(blocking.result, Invoice | None)
    schema = llmguard.output_schema(Invoice)
    assert_type(schema.problems, tuple[str, ...])


@structured_output(Invoice)
async def extract(request: Request) -> Response:
    return Response(text="{}")


@structured_output(Invoice, retries=1)
async def from_text(document: str, *, language: str = "en") -> str:
    return "{}"


async def uses_decorators() -> None:
    assert_type(await extract(Request.create(model="m", user="...")), Invoice)
    assert_type(await from_text("...", language="fr"), Invoice)
    await from_text(1)  # type: ignore[arg-type]
