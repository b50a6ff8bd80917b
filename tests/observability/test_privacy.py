"""``Pseudonymize`` and ``Observe``'s content rules, piece by piece (the whole-run
planted-secret test is test_planted_secrets.py)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import llmguard
from llmguard import (
    Budget,
    CallRecord,
    ConfigurationError,
    Fallback,
    Guard,
    Limit,
    MemoryStore,
    Observe,
    Pseudonymize,
    Request,
    Response,
    Toolbox,
    tool,
)
from llmguard.testing import FakeProvider, FakeReply, capture_records

KEY = b"0123456789abcdef-test-key"
pytestmark = pytest.mark.anyio


def test_pseudonyms_are_keyed_stable_and_never_show_the_key() -> None:
    layer = Pseudonymize(KEY)
    alice = layer.pseudonym("alice")
    assert alice == layer.pseudonym("alice") and alice.startswith("anon-")
    assert len(alice) == len("anon-") + 24
    assert alice != layer.pseudonym("bob")
    assert alice != Pseudonymize(KEY + b"!").pseudonym("alice")  # another key, another name
    assert Pseudonymize(KEY.decode()).pseudonym("alice") == alice
    assert len(Pseudonymize(KEY, length=64).pseudonym("a")) == len("anon-") + 64
    assert KEY.decode() not in repr(layer) and repr(layer) == "Pseudonymize(fields=('user',))"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": b"short"},
        {"key": KEY, "fields": ("email",)},
        {"key": KEY, "fields": ()},
        {"key": KEY, "length": 8},
    ],
)
def test_bad_configuration_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Pseudonymize(**kwargs)


def test_apply_replaces_only_the_chosen_fields_that_are_set() -> None:
    layer = Pseudonymize(KEY, fields=("user", "tenant"))
    assert layer.fields == ("user", "tenant")
    context = llmguard.CallContext(user="alice", tenant=None, endpoint="/chat", tags=("a",))
    masked = layer.apply(context)
    assert masked.user == layer.pseudonym("alice")
    assert masked.tenant is None and masked.endpoint == "/chat" and masked.tags == ("a",)
    empty = llmguard.CallContext()
    assert layer.apply(empty) is empty


async def test_every_layer_sees_the_pseudonym_and_code_in_the_call_the_real_user() -> None:
    seen_by_tool: list[str | None] = []

    @tool
    def whoami() -> str:
        """Who is asking."""
        seen_by_tool.append(llmguard.current_context().user)
        return "ok"

    fake = FakeProvider([FakeReply.tool_call("whoami", {}), "done"], default="ok")
    layer = Pseudonymize(KEY)
    store = MemoryStore()
    guard = Guard(
        fake,
        model="m",
        pseudonymize=layer,
        observe=True,
        budget=Budget(Limit(tokens=10_000, per="hour", scope="user"), store=store),
    )
    assert [type(x).__name__ for x in guard.layers][:2] == ["Pseudonymize", "Observe"]
    with capture_records() as records, llmguard.context(user="alice"):
        await guard.run_tools(user="hi", tools=Toolbox([whoami]))
        async with guard.stream(user="hi") as events:
            [_ async for _ in events]
    assert seen_by_tool == ["alice"]  # tools see the real caller
    # once per call, though a tool loop passes through the layer at every step
    assert [r.user for r in records] == [layer.pseudonym("alice")] * 2
    # a budget is asked about a caller through the same layer
    budget = guard.layers[2]
    assert isinstance(budget, Budget)
    (status,) = await budget.status(layer.apply(llmguard.CallContext(user="alice")))
    assert status.used > 0
    (raw,) = await budget.status(llmguard.CallContext(user="alice"))
    assert raw.used == 0


async def test_as_a_decorator() -> None:
    layer = Pseudonymize(KEY)
    users: list[str | None] = []

    @Observe(callback=lambda record: users.append(record.user))
    @layer
    async def answer(request: Request) -> Response:
        return Response(text="hi", model="m")

    with llmguard.context(user="bob"):
        await answer(Request.create(model="m", user="hello"))
    assert users == [layer.pseudonym("bob")]


async def test_observe_redacts_content_only_when_asked_and_drops_it_if_redact_fails(
    caplog: pytest.LogCaptureFixture,
) -> None:
    records: list[CallRecord] = []

    def redact(text: str) -> str:
        return text.replace("4111", "****")

    def broken(text: str) -> str:
        raise ValueError("no")

    for observe in (
        Observe(callback=records.append),
        Observe(callback=records.append, include_content=True, redact=redact),
        Observe(callback=records.append, include_content=True, redact=broken),
    ):
        guard = Guard(FakeProvider(default="card 4111 noted"), [observe], model="m")
        await guard.complete(user="my card is 4111")
    plain, redacted, failed = records
    assert plain.prompt is None and plain.completion is None
    assert redacted.prompt == "user: my card is ****" and redacted.completion == "card **** noted"
    assert failed.prompt is None and failed.completion is None
    assert "redact hook raised" in caplog.text


async def test_a_call_a_fallback_answered_is_logged_as_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def canned(request: Request) -> Response:
        return Response(text="FAQ", model="faq")

    fake = FakeProvider([FakeReply.server_error(503), "fine"])
    guard = Guard(fake, [Observe(), Fallback(to=[canned])], model="m")
    with caplog.at_level(logging.INFO, logger="llmguard.calls"):
        await guard.complete(user="one")
        await guard.complete(user="two")
    degraded, normal = caplog.records
    assert degraded.levelno == logging.WARNING
    assert degraded.getMessage().endswith("fallback=" + canned.__qualname__)
    assert normal.levelno == logging.INFO and "fallback" not in normal.getMessage()
