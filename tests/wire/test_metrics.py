"""wire.metrics: every metric defined once, named and documented, and served on --metrics-port."""

from __future__ import annotations

import urllib.request

from prometheus_client import REGISTRY, CollectorRegistry, Counter
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

import wire.metrics as metrics


def defined_metrics() -> dict[str, MetricWrapperBase]:
    return {name: value for name, value in vars(metrics).items() if isinstance(value, MetricWrapperBase)}


def test_every_metric_is_lookout_prefixed_documented_and_on_the_default_registry() -> None:
    found = defined_metrics()
    assert len(found) >= 20
    registered = {family.name for family in REGISTRY.collect()}
    names = [m._name for m in found.values()]
    assert len(names) == len(set(names)), "a metric name is defined twice"
    for attribute, metric in found.items():
        assert attribute.isupper(), attribute
        assert metric._name.startswith("lookout_"), metric._name
        assert len(metric._documentation) > 10, f"{metric._name} needs a help text that explains it"
        assert metric._name in registered, f"{metric._name} is not on prometheus-client's default registry"


def test_drops_are_labelled_by_reason_and_site() -> None:
    assert metrics.FRAMES_DROPPED._labelnames == ("model", "site", "reason")
    assert metrics.FRAMES_IN._labelnames == ("site", "model")


def test_metrics_server_serves_the_registry_on_a_port() -> None:
    registry = CollectorRegistry()
    counter = Counter("lookout_test_served", "A counter of this test.", registry=registry)
    counter.inc(3)
    server, thread = metrics.start_metrics_server(0, host="127.0.0.1", registry=registry)
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=10) as response:
            text = response.read().decode()
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert families["lookout_test_served"].samples[0].value == 3
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)
    assert not thread.is_alive()
