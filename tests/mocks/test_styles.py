"""Each style's fast JSON path agrees with its readable `render`, and the
catalogue's batched `products` with its one-at-a-time `product`."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mocks import STYLES, Catalogue
from mocks.styles import make_style


@pytest.mark.parametrize("style", STYLES)
@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**40),
    heterogeneity=st.sampled_from([0.0, 0.2, 1.0]) | st.floats(0, 1),
    start=st.integers(0, 4000),
)
def test_render_page_is_render(style, seed, heterogeneity, start):
    catalogue = Catalogue(5000, seed, heterogeneity=heterogeneity, defect_rate=0.2, duplicate_rate=0.1)
    renderer = make_style(style, seed)
    products = catalogue.products(start, start + 100)
    page = msgspec.json.decode(msgspec.json.encode(renderer.render_page(catalogue, start, start + 100)))
    assert page == msgspec.json.decode(msgspec.json.encode([renderer.render(p) for p in products]))


@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**40), size=st.integers(1, 3000), start=st.integers(0, 3000))
def test_batched_products_equal_single_products(seed, size, start):
    catalogue = Catalogue(size, seed, heterogeneity=0.4, defect_rate=0.1, duplicate_rate=0.1)
    batch = catalogue.products(start, start + 50)
    single = [catalogue.product(i) for i in range(start, min(start + 50, size))]
    for a, b in zip(batch, single, strict=True):
        assert [getattr(a, f) for f in a.__slots__] == [getattr(b, f) for f in b.__slots__]
    assert len(batch) == len(single)


def test_duplicates_are_byte_identical_to_their_originals():
    catalogue = Catalogue(2000, 5, duplicate_rate=0.1)
    renderer = make_style("dummyjson")
    duplicates = catalogue.truth()["duplicates"]
    assert duplicates
    for dup in duplicates:
        copy = msgspec.json.encode(renderer.render_page(catalogue, dup["index"], dup["index"] + 1))
        original = msgspec.json.encode(renderer.render_page(catalogue, dup["of"], dup["of"] + 1))
        assert copy == original
