"""The collector config and the compose file fit together (structure only:
no Docker engine runs here)."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


def test_every_component_in_a_pipeline_is_defined():
    config = load("otel-collector.yaml")
    pipelines = config["service"]["pipelines"]
    assert {"traces", "metrics"} <= set(pipelines)
    for name, pipeline in pipelines.items():
        for section in ("receivers", "processors", "exporters"):
            for component in pipeline[section]:
                assert component in config[section], f"{name}: {section[:-1]} {component!r} is not defined"
    assert pipelines["traces"]["processors"] == ["memory_limiter", "batch"]  # memory_limiter first
    assert set(config["receivers"]["otlp"]["protocols"]) == {"grpc", "http"}
    for extension in config["service"].get("extensions", []):
        assert extension in config["extensions"]


def test_traces_go_to_the_jaeger_service_of_the_compose_file():
    config, compose = load("otel-collector.yaml"), load("compose.yaml")
    jaeger = config["exporters"]["otlp/jaeger"]["endpoint"]
    host, _, port = jaeger.partition(":")
    assert host in compose["services"] and port == "4317"
    assert "otlp/jaeger" in config["service"]["pipelines"]["traces"]["exporters"]
    collector = compose["services"]["otel-collector"]
    assert any(v.startswith("./otel-collector.yaml:") for v in collector["volumes"])
    published = {p.split(":")[0] for p in collector["ports"]}
    assert {"4317", "4318"} <= published
    assert "16686:16686" in compose["services"]["jaeger"]["ports"]
