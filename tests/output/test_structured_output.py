"""``guard.structured``: validated instances, modes, re-asks, refusals, one record a call."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from typing import Literal

import pytest
from pydantic import BaseModel, Field, TypeAdapter
from trio.testing import MockClock

import llmguard
from llmguard import (
    BaseLayer,
    ConfigurationError,
    DeadlineExceeded,
    FunctionProvider,
    Guard,
    Handler,
    Observe,
    OutputValidationError,
    Refusal,
    Request,
    Response,
    Usage,
)
from llmguard.testing import FakeProvider, FakeReply, capture_records

pytestmark = pytest.mark.anyio

VIRTUAL_TIME = [pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio")]


class Answer(BaseModel):
    rating: int
    joke: str


class Item(BaseModel):
    name: str
    qty: int = 1


class Order(BaseModel):
    title: str
    items: list[Item]
    note: str | None = None


def guarded(
    *replies: FakeReply | str,
    structured_output: llmguard.OutputMode = "strict",
    default: str | None = None,
) -> tuple[Guard, FakeProvider]:
    provider = FakeProvider(replies, structured_output=structured_output, default=default)
    return Guard(provider, [Observe()], model="fake-model"), provider


# --- the acceptance scripts --------------------------------------------------------------


async def test_valid_the_first_time() -> None:
    guard, fake = guarded('{"rating": 4, "joke": "Why did the span cross the trace?"}')
    with capture_records() as records:
        answer = await guard.structured(Answer, user="Tell me a joke")
    assert answer == Answer(rating=4, joke="Why did the span cross the trace?")
    assert len(fake.requests) == 1
    (record,) = records
    assert record.attempts == 1
    assert record.error is None


async def test_fenced_json_with_prose_around_it() -> None:
    reply = 'Sure! Here it is:\n\n```json\n{"rating": 5, "joke": "ok"}\n```\n\nEnjoy.'
    guard, fake = guarded(reply)
    assert await guard.structured(Answer, user="joke") == Answer(rating=5, joke="ok")
    assert len(fake.requests) == 1


async def test_invalid_then_valid_is_two_calls_with_usage_summed() -> None:
    first = FakeReply.of_text(
        '{"rating": "four", "joke": "x"}', usage=Usage(input_tokens=50, output_tokens=10)
    )
    second = FakeReply.of_text(
        '{"rating": 4, "joke": "x"}', usage=Usage(input_tokens=80, output_tokens=12)
    )
    guard, fake = guarded(first, second)
    with capture_records() as records:
        answer = await guard.structured(Answer, user="joke")
    assert answer == Answer(rating=4, joke="x")
    assert len(fake.requests) == 2
    (record,) = records
    assert record.attempts == 2
    assert record.usage == Usage(input_tokens=130, output_tokens=22)
    # The re-ask carries the rejected answer and the validation error.
    reask = fake.requests[1].messages
    assert reask[:-2] == fake.requests[0].messages
    assert reask[-2].role == "assistant"
    assert reask[-2].content == '{"rating": "four", "joke": "x"}'
    assert reask[-1].role == "user"
    feedback = reask[-1].content or ""
    assert "rating" in feedback
    assert "valid integer" in feedback
    assert '(got "four")' in feedback


async def test_always_invalid_raises_with_every_attempt() -> None:
    replies = ["not json at all", '{"rating": 1}', '{"rating": "x", "joke": 3}']
    guard, fake = guarded(*replies)
    with capture_records() as records, pytest.raises(OutputValidationError) as caught:
        await guard.structured(Answer, user="joke")
    error = caught.value
    assert [raw for raw, _ in error.attempts] == replies
    assert "no JSON object was found" in error.attempts[0][1]
    assert "joke: field required" in error.attempts[1][1]
    assert "2 validation errors" in error.attempts[2][1]
    assert "in 3 attempts" in str(error)
    assert len(fake.requests) == 3
    (record,) = records
    assert (record.attempts, record.error) == (3, "OutputValidationError")


async def test_retries_bounds_the_attempts() -> None:
    guard, fake = guarded(default="nope")
    with pytest.raises(OutputValidationError) as caught:
        await guard.structured(Answer, user="joke", retries=0)
    assert len(caught.value.attempts) == 1
    assert len(fake.requests) == 1
    with pytest.raises(OutputValidationError) as caught:
        await guard.structured(Answer, user="joke", retries=4)
    assert len(caught.value.attempts) == 5


async def test_refusal_is_typed_and_not_reasked() -> None:
    guard, fake = guarded(
        FakeReply.refused("I can't help with that."), '{"rating": 1, "joke": "x"}'
    )
    with capture_records() as records, pytest.raises(Refusal) as caught:
        await guard.structured(Answer, user="something harmful")
    assert caught.value.refusal == "I can't help with that."
    assert caught.value.retryable is False
    assert len(fake.requests) == 1
    assert fake.pending == 1
    (record,) = records
    assert (record.attempts, record.error) == (1, "Refusal")


# --- one call, every attempt through every layer ----------------------------------------------


class Counting(BaseLayer):
    def __init__(self) -> None:
        self.calls = 0

    async def complete(self, request: Request, call_next: Handler) -> Response:
        self.calls += 1
        return await call_next(request)


async def test_every_attempt_goes_through_every_layer_in_one_call_state() -> None:
    counting = Counting()
    seen: list[int] = []

    async def hook(state: llmguard.CallState, request: Request, number: int) -> None:
        seen.append(number)

    class Hooked(BaseLayer):
        async def complete(self, request: Request, call_next: Handler) -> Response:
            state = llmguard.current_call()
            assert state is not None
            if not state.extra.get("hooked"):
                state.extra["hooked"] = True
                state.before_attempt(hook)
            return await call_next(request)

    fake = FakeProvider(["{}", '{"rating": 2, "joke": "j"}'])
    guard = Guard(fake, [Observe(), counting, Hooked()], model="m")
    with capture_records() as records:
        await guard.structured(Answer, user="joke")
    assert counting.calls == 2
    assert seen == [0, 1]
    assert len(records) == 1


async def test_a_provider_error_is_not_a_validation_failure() -> None:
    guard, fake = guarded(FakeReply.server_error(503), '{"rating": 1, "joke": "x"}')
    with pytest.raises(llmguard.ProviderError):
        await guard.structured(Answer, user="joke")
    assert len(fake.requests) == 1


@pytest.mark.parametrize("anyio_backend", VIRTUAL_TIME)
async def test_the_total_deadline_spans_every_attempt() -> None:
    fake = FakeProvider(latency=4.0, default="not json")
    guard = Guard(fake, model="m", timeout=10.0)
    with pytest.raises(DeadlineExceeded):
        await guard.structured(Answer, user="joke", retries=5)
    assert len(fake.requests) == 3  # at 0 s, 4 s and 8 s; the third is cut at 10 s


# --- modes ----------------------------------------------------------------------------------


async def test_strict_mode_sends_the_strict_schema_and_no_instructions() -> None:
    guard, fake = guarded('{"title": "t", "items": []}')
    await guard.structured(Order, system="Be brief.", user="order")
    (request,) = fake.requests
    assert request.response_format is not None
    assert request.response_format["type"] == "json_schema"
    sent = request.response_format["json_schema"]
    assert sent["name"] == "Order"
    assert sent["strict"] is True
    assert sent["schema"]["additionalProperties"] is False
    assert sent["schema"]["required"] == ["title", "items", "note"]
    assert [m.role for m in request.messages] == ["system", "user"]


async def test_json_mode_when_the_provider_offers_no_strict_schemas() -> None:
    guard, fake = guarded('{"title": "t", "items": []}', structured_output="json")
    await guard.structured(Order, system="Be brief.", user="order")
    (request,) = fake.requests
    assert request.response_format == {"type": "json_object"}
    assert [m.role for m in request.messages] == ["system", "system", "user"]
    assert request.messages[0].content == "Be brief."
    instructions = request.messages[1].content or ""
    assert "JSON" in instructions
    assert json.dumps(llmguard.output_schema(Order).prompt_schema) in instructions


async def test_prompt_mode_as_the_last_resort() -> None:
    guard, fake = guarded('{"title": "t", "items": []}', structured_output="prompt")
    await guard.structured(Order, user="order")
    (request,) = fake.requests
    assert request.response_format is None
    assert request.messages[0].role == "system"
    assert "JSON schema" in (request.messages[0].content or "")


async def test_auto_falls_back_to_json_mode_for_a_schema_that_cannot_be_strict() -> None:
    class Tags(BaseModel):
        counts: dict[str, int]

    guard, fake = guarded('{"counts": {"a": 1}}')
    assert await guard.structured(Tags, user="x") == Tags(counts={"a": 1})
    assert fake.requests[0].response_format == {"type": "json_object"}
    with pytest.raises(ConfigurationError, match=r"Tags\.counts: a mapping with free-form keys"):
        await guard.structured(Tags, user="x", mode="strict")
    assert len(fake.requests) == 1  # nothing was sent for the refused call


async def test_a_function_provider_gets_json_mode() -> None:
    seen: list[Request] = []

    async def answer(request: Request) -> Response:
        seen.append(request)
        return Response(text='{"rating": 3, "joke": "j"}')

    guard = Guard(FunctionProvider(answer), model="m")
    assert (await guard.structured(Answer, user="j")).rating == 3
    assert seen[0].response_format == {"type": "json_object"}


async def test_explicit_modes_override_auto() -> None:
    guard, fake = guarded('{"rating": 3, "joke": "j"}', '{"rating": 3, "joke": "j"}')
    await guard.structured(Answer, user="j", mode="prompt")
    await guard.structured(Answer, user="j", mode="json")
    assert fake.requests[0].response_format is None
    assert fake.requests[1].response_format == {"type": "json_object"}


async def test_misuse_is_refused_before_anything_is_sent() -> None:
    guard, fake = guarded(default='{"rating": 3, "joke": "j"}')
    with pytest.raises(ConfigurationError, match="retries"):
        await guard.structured(Answer, user="j", retries=-1)
    with pytest.raises(ConfigurationError, match="mode"):
        await guard.structured(Answer, user="j", mode="xml")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="response_format"):
        await guard.structured(Answer, user="j", response_format={"type": "json_object"})

    class Opaque:
        pass

    with pytest.raises(ConfigurationError, match="cannot be used as an output type"):
        await guard.structured(Opaque, user="j")
    assert fake.requests == []


# --- output types -----------------------------------------------------------------------------


async def test_a_list_is_wrapped_in_an_object_and_unwrapped() -> None:
    guard, fake = guarded('{"result": [{"name": "apple", "qty": 3}, {"name": "pear"}]}')
    items = await guard.structured(list[Item], user="list")
    assert items == [Item(name="apple", qty=3), Item(name="pear", qty=1)]
    schema = fake.requests[0].response_format["json_schema"]["schema"]  # type: ignore[index]
    assert schema["required"] == ["result"]
    assert schema["properties"]["result"]["type"] == "array"


async def test_unions_and_plain_types_through_a_type_adapter() -> None:
    guard, _ = guarded('{"result": 42}', '{"result": "forty-two"}', '{"result": 7}')
    adapter: TypeAdapter[int | str] = TypeAdapter(int | str)
    assert await guard.structured(adapter, user="n") == 42
    assert await guard.structured(adapter, user="n") == "forty-two"
    assert await guard.structured(int, user="n") == 7


async def test_dataclasses_and_literals() -> None:
    @dataclasses.dataclass
    class Point:
        x: int
        y: int

    guard, _ = guarded('{"x": 1, "y": 2}', '{"result": "red"}')
    assert await guard.structured(Point, user="p") == Point(1, 2)
    color: TypeAdapter[Literal["red", "blue"]] = TypeAdapter(Literal["red", "blue"])
    assert await guard.structured(color, user="c") == "red"


async def test_a_null_for_a_left_out_field_means_its_default() -> None:
    reply = '{"title": "t", "items": [{"name": "a", "qty": null}], "note": null}'
    guard, _ = guarded(reply)
    order = await guard.structured(Order, user="o")
    assert order == Order(title="t", items=[Item(name="a", qty=1)], note=None)


async def test_a_null_where_the_field_is_required_is_still_an_error() -> None:
    guard, _ = guarded('{"rating": null, "joke": "x"}')
    with pytest.raises(OutputValidationError) as caught:
        await guard.structured(Answer, user="j", retries=0)
    assert "rating" in caught.value.attempts[0][1]


async def test_constraints_are_enforced_by_validation_and_re_asked() -> None:
    class Short(BaseModel):
        code: str = Field(max_length=3)

    guard, fake = guarded('{"code": "ABCDE"}', '{"code": "ABC"}')
    assert await guard.structured(Short, user="c") == Short(code="ABC")
    assert "at most 3 characters" in (fake.requests[1].messages[-1].content or "")


async def test_an_answer_cut_at_the_token_limit_says_so() -> None:
    cut = FakeReply.of_text('{"rating": 4, "jo', finish_reason="length")
    guard, fake = guarded(cut, '{"rating": 4, "joke": "j"}')
    await guard.structured(Answer, user="j")
    assert "cut off at the output token limit" in (fake.requests[1].messages[-1].content or "")


async def test_an_empty_answer_is_re_asked() -> None:
    guard, fake = guarded("", '{"rating": 4, "joke": "j"}')
    await guard.structured(Answer, user="j")
    assert "empty" in (fake.requests[1].messages[-1].content or "")


def test_import_llmguard_does_not_load_pydantic() -> None:
    code = "import sys, llmguard; print('pydantic' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "False"


async def test_a_budget_is_charged_for_every_attempt() -> None:
    first = FakeReply.of_text('{"rating": "x"}', usage=Usage(input_tokens=40, output_tokens=10))
    second = FakeReply.of_text(
        '{"rating": 1, "joke": "j"}', usage=Usage(input_tokens=70, output_tokens=12)
    )
    budget = llmguard.Budget(llmguard.Limit(tokens=10_000, per="day"), store=llmguard.MemoryStore())
    guard = Guard(FakeProvider([first, second]), [Observe(), budget], model="gpt-4o-mini")
    with capture_records() as records:
        await guard.structured(Answer, user="joke", max_output_tokens=50)
    (status,) = await budget.status()
    assert (status.used, status.reserved) == (132, 0)
    (record,) = records
    assert record.usage.total_tokens == 132


async def test_a_budget_refuses_a_re_ask_that_does_not_fit() -> None:
    invalid = FakeReply.of_text('{"rating": "x"}', usage=Usage(input_tokens=40, output_tokens=10))
    budget = llmguard.Budget(llmguard.Limit(tokens=250, per="day"), store=llmguard.MemoryStore())
    fake = FakeProvider(default=invalid)
    guard = Guard(fake, [budget], model="gpt-4o-mini")
    with pytest.raises(llmguard.BudgetExceeded):
        await guard.structured(Answer, user="joke", max_output_tokens=50, retries=5)
    assert 2 <= len(fake.requests) < 6  # a re-ask was refused before it was sent
    (status,) = await budget.status()
    assert status.used == 50 * len(fake.requests) <= 250  # every attempt was charged
