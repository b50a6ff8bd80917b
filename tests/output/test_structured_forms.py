"""The other forms: ``guard.sync.structured(_stream)`` and the ``structured_output`` decorator."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest
from pydantic import BaseModel

import llmguard
from llmguard import (
    ConfigurationError,
    Guard,
    Observe,
    OutputValidationError,
    Request,
    Response,
    SyncUsageError,
    structured_output,
)
from llmguard.testing import FakeProvider, capture_records


class Answer(BaseModel):
    rating: int
    joke: str


class Loose(BaseModel):
    counts: dict[str, int]


GOOD = '{"rating": 4, "joke": "j"}'


@pytest.fixture
def guard() -> Iterator[Guard]:
    built = Guard(FakeProvider(default=GOOD, chunk_size=3), [Observe()], model="m")
    yield built
    built.sync.close()


# --- guard.sync -----------------------------------------------------------------------------


def test_sync_structured(guard: Guard) -> None:
    with capture_records() as records, llmguard.context(user="alice"):
        answer = guard.sync.structured(Answer, user="joke")
    assert answer == Answer(rating=4, joke="j")
    (record,) = records
    assert record.user == "alice"


def test_sync_structured_stream(guard: Guard) -> None:
    with guard.sync.structured_stream(Answer, user="joke") as partials:
        seen = list(partials)
    assert seen[-1] == Answer(rating=4, joke="j")
    assert partials.result == seen[-1]
    assert partials.attempt == 1
    assert len(seen) > 2
    assert type(seen[0]).__name__ == "PartialAnswer"


def test_sync_structured_stream_re_asks_within_the_same_call() -> None:
    fake = FakeProvider(['{"rating": "x", "joke": "j"}', GOOD], chunk_size=4)
    guard = Guard(fake, [Observe()], model="m")
    try:
        with (
            capture_records() as records,
            llmguard.context(user="bob"),
            guard.sync.structured_stream(Answer, user="joke") as partials,
        ):
            attempts = {partials.attempt for _ in partials}
        assert attempts == {1, 2}
        assert partials.result == Answer(rating=4, joke="j")
        (record,) = records
        assert (record.attempts, record.user, record.error) == (2, "bob", None)
    finally:
        guard.sync.close()


def test_sync_structured_refuses_inside_an_event_loop(guard: Guard) -> None:
    async def inside() -> None:
        with pytest.raises(SyncUsageError, match=r"await guard\.structured"):
            guard.sync.structured(Answer, user="joke")
        with pytest.raises(SyncUsageError), guard.sync.structured_stream(Answer, user="joke"):
            pass

    anyio.run(inside)


# --- the decorator ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_decorating_a_request_handler_re_asks_with_the_errors() -> None:
    fake = FakeProvider(['{"rating": "x", "joke": "j"}', GOOD])

    @structured_output(Answer)
    @Observe()
    async def ask(request: Request) -> Response:
        """Ask the model."""
        return await fake.complete(request)

    with capture_records() as records:
        answer = await ask(Request.create(model="m", user="joke"))
    assert answer == Answer(rating=4, joke="j")
    assert ask.__name__ == "ask"
    assert ask.__doc__ == "Ask the model."
    first, second = fake.requests
    assert first.response_format == {"type": "json_object"}  # no provider to ask: JSON mode
    assert first.messages[0].role == "system"
    assert "rating" in (second.messages[-1].content or "")
    (record,) = records
    assert record.attempts == 2
    assert record.usage.total_tokens > 0


@pytest.mark.anyio
async def test_decorating_with_strict_mode() -> None:
    fake = FakeProvider([GOOD])

    @structured_output(Answer, mode="strict", retries=0)
    async def ask(request: Request) -> Response:
        return await fake.complete(request)

    await ask(Request.create(model="m", user="joke"))
    assert fake.requests[0].response_format == llmguard.output_schema(Answer).response_format
    assert ask.__wrapped__  # type: ignore[attr-defined]


@pytest.mark.anyio
async def test_decorating_a_function_that_returns_text() -> None:
    answers = iter(["Sure: {not json}", f"Here you go:\n```json\n{GOOD}\n```"])
    calls: list[tuple[str, int]] = []
    decorator = structured_output(Answer, retries=1)

    @decorator
    async def joke(topic: str, *, length: int) -> str:
        calls.append((topic, length))
        return next(answers)

    assert await joke("spans", length=2) == Answer(rating=4, joke="j")
    assert calls == [("spans", 2), ("spans", 2)]  # asked again with the same arguments
    assert "JSON schema" in decorator.schema.instructions
    assert repr(decorator) == "structured_output(Answer, retries=1, mode='json')"


@pytest.mark.anyio
async def test_a_text_function_that_never_validates() -> None:
    @structured_output(Answer, retries=2)
    async def joke() -> str:
        return "no"

    with pytest.raises(OutputValidationError) as caught:
        await joke()
    assert [raw for raw, _ in caught.value.attempts] == ["no", "no", "no"]


@pytest.mark.anyio
async def test_the_decorator_joins_a_call_already_open() -> None:
    @structured_output(Answer)
    async def ask(request: Request) -> str:
        return GOOD

    @llmguard.timeout(5)
    async def endpoint() -> Answer:
        state = llmguard.current_call()
        assert state is not None
        answer = await ask(Request.create(model="m", user="joke"))
        assert len(state.attempts) == 1
        return answer

    assert await endpoint() == Answer(rating=4, joke="j")


@pytest.mark.anyio
async def test_the_decorator_refuses_misuse() -> None:
    with pytest.raises(ConfigurationError, match="strict JSON-schema mode"):
        structured_output(Loose, mode="strict")
    with pytest.raises(ConfigurationError, match="retries"):
        structured_output(Answer, retries=-1)
    with pytest.raises(ConfigurationError, match="not callable"):
        structured_output(Answer)(42)  # type: ignore[call-overload]

    async def number() -> int:
        return 1

    wrong = structured_output(Answer)(number)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="must return the model's text"):
        await wrong()
