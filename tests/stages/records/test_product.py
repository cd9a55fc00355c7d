"""Converters: never raise on any JSON value, accept every price format the
mocks emit, and round-trip formatted prices."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocks import Catalogue
from mocks.styles._common import PRICE_FORMS
from stages.records.product import Invalid, clean_title, flatten_category, parse_price, source_id

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=10,
)


@given(value=json_values)
def test_converters_never_raise_anything_but_invalid(value):
    for convert in (parse_price, flatten_category, clean_title, source_id):
        with contextlib.suppress(Invalid):  # anything else escaping fails the test
            convert(value)


@given(cents=st.integers(0, 10**9), form=st.sampled_from(sorted(set(PRICE_FORMS) - {"cents", "int"})))
def test_every_mock_price_format_round_trips(cents, form):
    amount, _ = parse_price(PRICE_FORMS[form](cents))
    assert amount == round(cents / 100, 2)


@given(cents=st.integers(0, 10**9))
def test_cents_and_whole_units(cents):
    assert parse_price(cents, cents=True)[0] == round(cents / 100, 2)
    assert parse_price(PRICE_FORMS["int"](cents))[0] == round(cents / 100)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("$1,299.00", (1299.0, "USD")),
        ("1.299,00 €", (1299.0, "EUR")),
        ("12,50 €", (12.5, "EUR")),
        ("1299.00", (1299.0, None)),
        ("EUR 7.5", (7.5, "EUR")),
        ("1 299,99", (1299.99, None)),
        ({"amount": "12.50", "currency": "usd"}, (12.5, "USD")),
    ],
)
def test_price_examples(text, expected):
    assert parse_price(text) == expected


@pytest.mark.parametrize("bad", [None, -1, "-$5.00", "abc", "", True, float("inf"), [1], {"currency": "USD"}])
def test_bad_prices_are_invalid(bad):
    with pytest.raises(Invalid):
        parse_price(bad)


def test_every_mock_product_normalises_or_is_a_declared_defect():
    catalogue = Catalogue(3000, seed=9, heterogeneity=1.0, defect_rate=0.2)
    from mocks.styles import make_style

    for style in ("dummyjson", "platzi", "reqres", "jsonserver", "cursor"):
        renderer = make_style(style)
        from stages.records.presets import PRESETS

        fields = PRESETS[style].fields
        for product in catalogue.products(0, 3000):
            record = renderer.render(product)
            title = record.get(fields["title"])
            try:
                source_id(record.get("id"))
                clean_title(title)
                parse_price(record.get(fields["price"]), cents=style == "cursor")
            except Invalid:
                assert product.defect is not None, (style, record)
            else:
                assert product.defect is None, (style, record)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_every_preset_reads_the_price_each_mock_meant(seed):
    """Every served price form of every style (cents, floats, "$1,299.00",
    "12,50 €", {"amount": "67.19"}, ...) comes out as the amount the mock
    meant, in major units: cents are divided only where they are integers."""
    from mocks.styles import make_style
    from mocks.styles._common import price_meant
    from stages.records.presets import PRESETS

    catalogue = Catalogue(200, seed=seed, heterogeneity=1.0, defect_rate=0.0)
    for style, preset in PRESETS.items():
        renderer = make_style(style)
        for product in catalogue.products(0, 200):
            if product.defect is not None:  # copies of defective slots (duplicates)
                continue
            served = renderer.render(product)[preset.fields["price"]]
            amount, _ = parse_price(served, cents=preset.cents)
            assert amount == price_meant(product, renderer.price_forms), (style, served)


def test_event_time_reads_what_apis_send_and_never_raises():
    from stages.records.product import event_time

    assert event_time("2024-03-01T10:00:00+02:00") == "2024-03-01T08:00:00.000Z"
    assert event_time("2024-03-01") == event_time("20240301") == "2024-03-01T00:00:00.000Z"
    assert event_time(1_700_000_000) == event_time("1700000000") == "2023-11-14T22:13:20.000Z"
    assert event_time(1_700_000_000_123) == "2023-11-14T22:13:20.123Z"  # milliseconds
    assert event_time("17000000") == "1970-07-16T18:13:20.000Z"  # eight digits, no date: Unix time
    for unreadable in (None, True, "garbage", float("nan"), 10**400, "0001-01-01T00:00:00+01:00", [1], {}):
        assert event_time(unreadable) is None
