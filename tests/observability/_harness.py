"""An ``OpenTelemetry`` layer wired to the SDK's in-memory span exporter and metric reader
(providers built here, never the global ones)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    HistogramDataPoint,
    InMemoryMetricReader,
    NumberDataPoint,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmguard import OpenTelemetry

Point = tuple[dict[str, Any], Any]
"""A metric point: its attributes, and its value (a counter's sum, or a histogram's
``(count, sum)``)."""


@dataclass
class Telemetry:
    layer: OpenTelemetry
    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self) -> list[ReadableSpan]:
        """Every ended span, in the order they ended."""
        return list(self.exporter.get_finished_spans())

    def span(self, name: str) -> ReadableSpan:
        """The one ended span of this name."""
        (found,) = [s for s in self.spans() if s.name == name]
        return found

    def metrics(self) -> dict[str, list[Point]]:
        """Every metric point, by metric name."""
        data = self.reader.get_metrics_data()
        out: dict[str, list[Point]] = {}
        if data is None:
            return out
        for resource in data.resource_metrics:
            for scope in resource.scope_metrics:
                for metric in scope.metrics:
                    points = out.setdefault(metric.name, [])
                    for point in metric.data.data_points:
                        if isinstance(point, HistogramDataPoint):
                            points.append((dict(point.attributes or {}), (point.count, point.sum)))
                        else:
                            assert isinstance(point, NumberDataPoint)
                            points.append((dict(point.attributes or {}), point.value))
        for points in out.values():
            points.sort(key=lambda p: sorted(p[0].items()))
        return out

    def units(self) -> dict[str, str]:
        """Every metric's unit, by name."""
        data = self.reader.get_metrics_data()
        assert data is not None
        return {
            metric.name: metric.unit or ""
            for resource in data.resource_metrics
            for scope in resource.scope_metrics
            for metric in scope.metrics
        }


def make_telemetry(
    *, include_content: bool = False, redact: Callable[[str], str] | None = None
) -> Telemetry:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(shutdown_on_exit=False)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    layer = OpenTelemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        include_content=include_content,
        redact=redact,
    )
    return Telemetry(layer, tracer_provider, exporter, reader)


def all_text(telemetry: Telemetry) -> str:
    """Every span's name, attributes, status and events as one string (to search in)."""
    parts: list[str] = []
    for span in telemetry.spans():
        parts.append(span.name)
        parts.extend(f"{k}={v!r}" for k, v in (span.attributes or {}).items())
        parts.append(str(span.status.description))
        for event in span.events:
            parts.append(event.name)
            parts.extend(f"{k}={v!r}" for k, v in (event.attributes or {}).items())
    return "\n".join(parts)
