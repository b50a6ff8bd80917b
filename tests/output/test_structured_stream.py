"""``guard.structured_stream``: partial objects that are prefixes of the final one."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field, TypeAdapter
from trio.testing import MockClock

import llmguard
from llmguard import (
    BaseLayer,
    DeadlineExceeded,
    EventStream,
    Guard,
    Observe,
    OutputValidationError,
    Request,
    StreamHandler,
    StreamOpener,
    StructuredPartials,
)
from llmguard._output.schema import output_spec
from llmguard.testing import FakeProvider, FakeReply, capture_records

pytestmark = pytest.mark.anyio

VIRTUAL_TIME = [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio")]


class Item(BaseModel):
    name: str
    qty: int = 1
    price: float | None = None


class Order(BaseModel):
    title: str
    items: list[Item]
    status: str = Field(pattern="^(open|closed)$")
    tags: list[str] = []
    note: str | None = None


ORDER = json.dumps(
    {
        "title": "Groceries for the week",
        "items": [
            {"name": "apple", "qty": 12, "price": 0.35},
            {"name": "pear", "qty": None, "price": -1.5e-3},
            {"name": 'quote " and \\ backslash', "qty": 3, "price": None},
        ],
        "status": "open",
        "tags": ["fruit", "weekly"],
        "note": None,
    },
    indent=1,
)


def dump(value: Any) -> Any:
    """A partial or final value as plain data; a partial model only with what arrived."""
    if isinstance(value, BaseModel):
        return {name: dump(getattr(value, name)) for name in value.model_fields_set}
    if isinstance(value, list):
        return [dump(v) for v in value]
    return value


def is_prefix_view(partial: Any, final: Any, *, complete: bool = False) -> bool:
    """``partial`` shows a prefix of ``final``: a field is absent or shows its final
    value, except that the one string being written may be a prefix of it; a list holds
    the final list's first items, all but the last of them complete. ``complete``: no
    prefixes allowed (a value the text has already gone past)."""
    if isinstance(partial, dict):
        return isinstance(final, dict) and all(
            key in final and is_prefix_view(value, final[key], complete=complete)
            for key, value in partial.items()
        )
    if isinstance(partial, list):
        if not isinstance(final, list) or len(partial) > len(final):
            return False
        if complete and len(partial) != len(final):
            return False
        last = len(partial) - 1
        return all(
            is_prefix_view(p, f, complete=complete or index < last)
            for index, (p, f) in enumerate(zip(partial, final, strict=False))
        )
    if isinstance(partial, str) and not complete:
        return isinstance(final, str) and final.startswith(partial)
    return bool(partial == final)


def full(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump()
    if isinstance(value, list):
        return [full(v) for v in value]
    return value


async def collect(guard: Guard, output_type: Any) -> tuple[list[Any], StructuredPartials[Any]]:
    seen: list[Any] = []
    async with guard.structured_stream(output_type, user="go") as partials:
        async for partial in partials:
            seen.append(partial)
    return seen, partials


@pytest.mark.parametrize("chunk_size", [1, 2, 3, 5, 8, 13])
async def test_every_partial_is_a_prefix_of_the_final_object(chunk_size: int) -> None:
    guard = Guard(FakeProvider([ORDER], chunk_size=chunk_size), model="m")
    seen, partials = await collect(guard, Order)
    *partial_values, final = seen
    assert isinstance(final, Order)
    assert partials.result is final
    assert len(partial_values) > 10
    for partial in partial_values:
        assert not isinstance(partial, Order)
        assert type(partial).__name__ == "PartialOrder"
        assert is_prefix_view(dump(partial), full(final)), dump(partial)
    # The partials fill in progressively: names and titles grow, items arrive one by one.
    titles = [p.title for p in partial_values if p.title]
    assert titles[0] != titles[-1] == "Groceries for the week"
    counts = [len(p.items) for p in partial_values if p.items is not None]
    assert counts == sorted(counts)
    assert counts[-1] == 3


async def test_the_final_instance_equals_the_non_streamed_result() -> None:
    streamed_guard = Guard(FakeProvider([ORDER], chunk_size=4), model="m")
    seen, _ = await collect(streamed_guard, Order)
    plain = await Guard(FakeProvider([ORDER]), model="m").structured(Order, user="go")
    assert seen[-1] == plain
    assert plain.items[1].qty == 1  # null meant "left out": the default applies


async def test_fenced_json_after_prose_in_prompt_mode() -> None:
    reply = f"Here is the order you asked for:\n```json\n{ORDER}\n```\nAnything else?"
    guard = Guard(FakeProvider([reply], chunk_size=5, structured_output="prompt"), model="m")
    seen, _ = await collect(guard, Order)
    *partial_values, final = seen
    assert final == await Guard(FakeProvider([reply]), model="m").structured(Order, user="go")
    assert partial_values
    for partial in partial_values:
        assert is_prefix_view(dump(partial), full(final))


async def test_a_list_streams_item_by_item() -> None:
    reply = json.dumps({"result": [{"name": f"item {i}", "qty": i} for i in range(5)]})
    guard = Guard(FakeProvider([reply], chunk_size=6), model="m")
    seen, _ = await collect(guard, list[Item])
    *partial_values, final = seen
    assert final == [Item(name=f"item {i}", qty=i) for i in range(5)]
    assert [len(p) for p in partial_values] == sorted(len(p) for p in partial_values)
    for partial in partial_values:
        assert is_prefix_view(dump(partial), full(final))


async def test_a_rejected_attempt_is_re_asked_and_streams_again() -> None:
    fake = FakeProvider(['{"title": "t", "items": [], "status": "maybe"}', ORDER], chunk_size=9)
    guard = Guard(fake, [Observe()], model="m")
    attempts: list[int] = []
    with capture_records() as records:
        async with guard.structured_stream(Order, user="go") as partials:
            async for _ in partials:
                attempts.append(partials.attempt)
    assert attempts[0] == 1
    assert attempts[-1] == 2
    assert isinstance(partials.result, Order)
    assert "status" in (fake.requests[1].messages[-1].content or "")
    (record,) = records
    assert (record.attempts, record.stream, record.error) == (2, True, None)
    assert record.finish_reason == "stop"
    assert record.usage.total_tokens > 0


async def test_failing_every_attempt_raises_from_the_iteration() -> None:
    fake = FakeProvider(default="nope", chunk_size=2)
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records, pytest.raises(OutputValidationError) as caught:
        async with guard.structured_stream(Order, user="go", retries=1) as partials:
            async for _ in partials:
                pass
    assert [raw for raw, _ in caught.value.attempts] == ["nope", "nope"]
    assert partials.result is None
    (record,) = records
    assert (record.attempts, record.error) == (2, "OutputValidationError")


async def test_a_failure_to_open_is_raised_on_entering() -> None:
    fake = FakeProvider([FakeReply.server_error(503)])
    guard = Guard(fake, [Observe()], model="m")
    stream = guard.structured_stream(Order, user="go")
    with capture_records() as records, pytest.raises(llmguard.ProviderError):
        await stream.__aenter__()
    assert fake.streams[0].closed
    (record,) = records
    assert (record.attempts, record.error, record.finish_reason) == (1, "ProviderError", None)


async def test_leaving_early_closes_the_upstream() -> None:
    fake = FakeProvider([ORDER], chunk_size=3)
    guard = Guard(fake, [Observe()], model="m")
    with capture_records() as records:
        async with guard.structured_stream(Order, user="go") as partials:
            async for _ in partials:
                break
    (log,) = fake.streams
    assert log.closed
    assert not log.completed
    (record,) = records
    assert record.attempts == 1


async def test_iterating_without_async_with() -> None:
    guard = Guard(FakeProvider([ORDER], chunk_size=50), model="m")
    seen = [partial async for partial in guard.structured_stream(Order, user="go")]
    assert isinstance(seen[-1], Order)


async def test_the_strict_schema_goes_with_the_streamed_request() -> None:
    fake = FakeProvider([ORDER])
    guard = Guard(fake, model="m")
    stream = guard.structured_stream(Order, user="go")
    assert stream.request.response_format == llmguard.output_schema(Order).response_format
    async with stream as partials:
        async for _ in partials:
            pass
    assert fake.streams[0].request.response_format == stream.request.response_format


@pytest.mark.parametrize("anyio_backend", VIRTUAL_TIME)
async def test_the_total_deadline_spans_the_stream() -> None:
    fake = FakeProvider([FakeReply(text=ORDER, chunk_delay=1.0)], chunk_size=10)
    guard = Guard(fake, model="m", timeout=5.0)
    with pytest.raises(DeadlineExceeded):
        async with guard.structured_stream(Order, user="go") as partials:
            async for _ in partials:
                pass
    assert fake.streams[0].closed


# --- the partial parser on its own, for any chunking ------------------------------------------


class Pet(BaseModel):
    name: str
    age: int
    weight: float
    tags: list[str]
    friends: list[Pet] = []
    owner: str | None = None


finite = st.floats(allow_nan=False, allow_infinity=False)
pets = st.builds(
    Pet,
    friends=st.lists(st.builds(Pet, friends=st.just([]), weight=finite), max_size=2),
    weight=finite,
)


def chunks(text: str, sizes: list[int]) -> Iterator[str]:
    position, index = 0, 0
    while position < len(text):
        size = sizes[index % len(sizes)]
        yield text[position : position + size]
        position += size
        index += 1


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pets, st.lists(st.integers(1, 9), min_size=1, max_size=5), st.sampled_from([None, 2]))
def test_any_chunking_gives_prefix_views(pet: Pet, sizes: list[int], indent: int | None) -> None:
    spec = output_spec(Pet)
    text = pet.model_dump_json(indent=indent)
    parser = spec.partial_parser()
    final = full(spec.parse(text))
    assert final == pet.model_dump()
    for chunk in chunks(text, sizes):
        partial = parser.feed(chunk)
        if partial is not None:
            assert is_prefix_view(dump(partial), final), (dump(partial), final)


def test_text_deltas_only_feed_the_parser() -> None:
    spec = output_spec(Item)
    parser = spec.partial_parser()
    assert parser.feed("") is None
    assert parser.feed("Thinking about it") is None  # prose before any JSON
    first = parser.feed('\n{"name": "ab')
    assert dump(first) == {"name": "ab"}
    assert dump(parser.feed("c")) == {"name": "abc"}
    assert parser.feed('" ') is None  # nothing new
    assert parser.feed(', "qty": 1') is None  # 1 might become 12: not shown yet
    assert dump(parser.feed("2}")) == {"name": "abc", "qty": 12}
    assert parser.feed(" and some prose after it") is None


@pytest.mark.parametrize("anyio_backend", VIRTUAL_TIME)
async def test_the_deadline_is_checked_on_each_read_when_iterating_bare() -> None:
    fake = FakeProvider([FakeReply(text=ORDER, chunk_delay=1.0)], chunk_size=10)
    guard = Guard(fake, [Observe()], model="m", timeout=5.0)
    seen = 0
    with capture_records() as records, pytest.raises(DeadlineExceeded):
        async for _ in guard.structured_stream(Order, user="go"):
            seen += 1
    assert seen >= 1
    assert fake.streams[0].closed
    (record,) = records
    assert record.error == "DeadlineExceeded"


async def test_a_stream_is_entered_once() -> None:
    guard = Guard(FakeProvider([ORDER]), model="m")
    stream = guard.structured_stream(Order, user="go")
    async with stream as partials:
        with pytest.raises(RuntimeError, match="only once"):
            await stream.__aenter__()
        async for _ in partials:
            pass


class Stalling(BaseLayer):
    """A layer whose stream takes forever to open (a slow upstream connection)."""

    def stream(self, request: Request, call_next: StreamHandler) -> StreamOpener:
        @asynccontextmanager
        async def opener() -> AsyncIterator[EventStream]:
            await anyio.sleep_forever()
            yield  # type: ignore[misc]

        return opener()


@pytest.mark.parametrize("anyio_backend", VIRTUAL_TIME)
async def test_the_deadline_covers_opening_the_stream() -> None:
    guard = Guard(FakeProvider([ORDER]), [Observe(), Stalling()], model="m", timeout=3.0)
    with capture_records() as records, pytest.raises(DeadlineExceeded):
        async with guard.structured_stream(Order, user="go"):
            pass
    (record,) = records
    assert record.error == "DeadlineExceeded"


async def test_a_type_adapter_streams_values_once_they_validate() -> None:
    reply = json.dumps({"result": [{"name": f"n{i}"} for i in range(4)]})
    guard = Guard(FakeProvider([reply], chunk_size=5), model="m")
    seen, _ = await collect(guard, TypeAdapter(list[Item]))
    *partial_values, final = seen
    assert final == [Item(name=f"n{i}") for i in range(4)]
    assert partial_values
    for partial in partial_values:
        assert all(isinstance(item, Item) for item in partial)  # validated as they are
        assert is_prefix_view(dump(partial), full(final))


async def test_types_without_models_stream_as_themselves() -> None:
    reply = json.dumps({"result": [1, 22, 333, 4444]})
    guard = Guard(FakeProvider([reply], chunk_size=3), model="m")
    seen, _ = await collect(guard, list[int])
    *partial_values, final = seen
    assert final == [1, 22, 333, 4444]
    for partial in partial_values:
        assert final[: len(partial)] == partial  # numbers are never shown half-written


def test_constraints_inside_containers_are_dropped_from_twins() -> None:
    class Tagged(BaseModel):
        tags: list[Annotated[str, Field(min_length=5)]]

    parser = output_spec(Tagged).partial_parser()
    assert dump(parser.feed('{"tags": ["abcdef", "ab')) == {"tags": ["abcdef", "ab"]}
    assert output_spec(Item).partial_parser().feed("{oops") is None
