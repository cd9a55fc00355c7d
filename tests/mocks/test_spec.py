"""Parsing of durations, ranges and rates, ServerSpec validation, and its
located errors when read from a config file."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from flow import units
from mocks import ServerSpec, parse_duration, parse_range, parse_rate
from mocks._config import ConfigError, load_mocks


@pytest.mark.parametrize(
    "text,seconds",
    [
        ("250ms", 0.25),
        ("2s", 2.0),
        ("1.5s", 1.5),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("3", 3.0),
        (0.5, 0.5),
        (" 10 ms ", 0.01),
    ],
)
def test_durations(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ms", "-1s", "5 sec", "1e3s", "inf", True, float("nan")])
def test_bad_durations(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_ranges():
    assert parse_range("50ms..400ms") == pytest.approx((0.05, 0.4))
    assert parse_range("1s") == (1.0, 1.0)
    with pytest.raises(ValueError, match="runs backwards"):
        parse_range("2s..1s")


def test_durations_and_rates_are_flows():
    # One grammar for graph.yaml and the mocks: the re-exports are flow's parsers.
    assert (parse_duration, parse_rate) == (units.parse_duration, units.parse_rate)


@pytest.mark.parametrize(
    "text,expected",
    [("5/s", (5, 1.0)), ("10/2s", (10, 2.0)), ("100/m", (100, 60.0)), ("3 / 500ms", (3, 0.5)), ("off", None)],
)
def test_rates(text, expected):
    assert parse_rate(text) == expected


@pytest.mark.parametrize("text", ["5", "five/s", "0/s", "5/0s", "5/x"])
def test_bad_rates(text):
    with pytest.raises(ValueError, match="rate"):
        parse_rate(text)


@given(ms=st.integers(0, 10**7))
def test_millisecond_durations_round_trip(ms):
    assert parse_duration(f"{ms}ms") == pytest.approx(ms / 1000)


@pytest.mark.parametrize(
    "fields,message",
    [
        ({"error_rate": 0.6, "reset_rate": 0.6}, "fault rates add up to 1.200"),
        ({"page_size": 50, "max_page_size": 20}, "page_size 50 exceeds max_page_size 20"),
        ({"latency": "5..2ms"}, "latency: range '5..2ms' runs backwards"),
        ({"outages": ["3s"]}, "outages: an outage is 'START..END'"),
        ({"rate_limit": "lots"}, "rate_limit: expected a rate"),
        ({"error_rate": 1.5}, "Expected `float` <= 1.0 - at `$.error_rate`"),
        ({"products": 0}, "Expected `int` >= 1 - at `$.products`"),
        ({"style": "shopify"}, "Invalid enum value 'shopify' - at `$.style`"),
        ({"errors": 0.1}, "Object contains unknown field `errors`"),
    ],
)
def test_spec_validation_names_the_field(fields, message):
    with pytest.raises(msgspec.ValidationError) as info:
        msgspec.convert(fields, ServerSpec)
    assert message in str(info.value)


@pytest.mark.parametrize(
    "server,message",
    [
        ("{latency: 5..2ms}", "2:16: latency: range '5..2ms' runs backwards; write 'LOW..HIGH'"),
        (
            "{rate_limit: lots}",
            "2:19: rate_limit: expected a rate such as '5/s', '10/2s' or 'off', got 'lots'",
        ),
        (
            "{outages: [2s..4s, 3s]}",
            "2:16: outages: an outage is 'START..END' after start, e.g. '2s..6s', got '3s'",
        ),
        (
            "{error_rate: 0.6, reset_rate: 0.6}",
            "2:6: fault rates add up to 1.200; each request gets at most one fault, so their sum must be <= 1",
        ),
        ("{error_rate: 1.5}", "2:19: expected `float` <= 1.0"),
        ("{page_size: 50, max_page_size: 20}", "2:6: page_size 50 exceeds max_page_size 20"),
        ("5", "2:6: expected `object`, got `int`"),
        ("{style: reqres}\n  a: {}", "3:3: duplicate key 'a' (first defined on line 2)"),
    ],
)
def test_config_errors_point_at_the_value(tmp_path, server, message):
    config = tmp_path / "cfg.yaml"
    config.write_text(f"mocks:\n  a: {server}\n")
    with pytest.raises(ConfigError) as info:
        load_mocks(config)
    assert str(info.value) == f"{config}:{message}"


def test_config_servers_decode_by_name(tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text("x: &base {style: reqres, seed: 3}\nmocks:\n  a: *base\n  b: {<<: *base, seed: 4}\n")
    specs = load_mocks(config)
    assert {name: (spec.style, spec.seed) for name, spec in specs.items()} == {
        "a": ("reqres", 3),
        "b": ("reqres", 4),
    }


def test_defaults_match_the_brief():
    spec = ServerSpec()
    assert (spec.style, spec.page_size, spec.rate_limit) == ("dummyjson", 20, "5/s")
    assert 100 <= spec.products <= 300
    assert ServerSpec(style="reqres").required_api_key == "reqres-free-v1"
    assert ServerSpec(style="dummyjson").required_api_key is None
