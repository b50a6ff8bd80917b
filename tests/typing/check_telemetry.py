"""The OpenTelemetry layer as docs/telemetry.md uses it, type-checked (mypy --strict)."""

from __future__ import annotations

from typing import assert_type

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider

from llmguard import Guard, Layer, OpenTelemetry, Request, Response
from llmguard.testing import FakeProvider


def redact(text: str) -> str:
    return text.replace("secret", "[redacted]")


def build() -> Guard:
    telemetry = OpenTelemetry(
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(),
        include_content=True,
        redact=redact,
    )
    layer: Layer = telemetry  # it is a Layer
    assert layer is telemetry
    return Guard(FakeProvider(["hi"]), model="m", telemetry=OpenTelemetry())


async def decorated(request: Request) -> Response:
    return Response(text="hi")


traced = OpenTelemetry()(decorated)
assert_type(build(), Guard)
