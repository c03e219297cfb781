"""Metrics: a Prometheus scrape (``ringq.metrics``, the admin endpoint's
``/metrics``) and an OpenTelemetry collection (``ringq.otel``) read every
backend's numbers; what a backend has no use for (Redis: a journal,
snapshots, fsyncs) is left out rather than failing the scrape."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import pytest
import ringq

# The wheel checks run the contract in venvs with only the test tools: the
# metrics extras are not there (the development venv has them).
pytest.importorskip("prometheus_client", reason="the prometheus extra is not installed")
pytest.importorskip("opentelemetry.sdk", reason="the otel extra is not installed")

import ringq.metrics
import ringq.otel
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("topic") is None and s.labels.get("handler") is None
    }


@pytest.mark.sync_only(reason="the collectors and the endpoint take a ringq.Queue")
def test_prometheus_scrapes_and_otel_collections_read_every_backend(q: ringq.Queue) -> None:
    """A Redis queue's scrape raised ``KeyError: 'journal_bytes'``, which
    failed the whole registry (the application's other metrics too), and
    the admin endpoint answered ``/metrics`` with a 400."""
    q.publish_many([b"a", b"b"], topic="t")
    registry = CollectorRegistry()
    ringq.metrics.register(q, registry)
    got = samples(generate_latest(registry).decode())
    assert (got["ringq_ready"], got["ringq_published_total"], got["ringq_degraded"]) == (2, 2, 0)

    reader = InMemoryMetricReader()
    ringq.otel.instrument(q, MeterProvider(metric_readers=[reader]))
    data = reader.get_metrics_data()
    assert data is not None
    points: dict[str, Any] = {
        m.name: m.data.data_points[0].value  # type: ignore[union-attr]
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.data.data_points and not m.data.data_points[0].attributes.get("topic")  # type: ignore[union-attr]
    }
    assert points["ringq.ready"] == 2

    server = q.serve_admin()
    try:
        with urllib.request.urlopen(f"{server.url}/metrics", timeout=10) as resp:
            assert samples(resp.read().decode())["ringq_ready"] == 2
        with urllib.request.urlopen(f"{server.url}/stats", timeout=10) as resp:
            assert json.loads(resp.read())["queue"]["ready"] == 2
    finally:
        server.close()
