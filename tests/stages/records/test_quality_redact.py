"""quality's documented deductions and redact's removals of personal data."""

from __future__ import annotations

import pytest

from stages.records.product import Product
from stages.records.quality import QualityParams, score
from stages.records.redact import redact_text


def product(**fields: object) -> Product:
    base = {
        "id": "s:1",
        "source_id": "1",
        "title": "Ergonomic Steel Chair",
        "source": "s",
        "price": 10.0,
        "currency": "USD",
        "category": "furniture",
        "processed_at": "2026-01-01T00:00:00Z",
    }
    return Product(**{**base, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({}, 1.0),
        ({"category": "uncategorized"}, 0.75),
        ({"price": 0.0}, 0.75),
        ({"title": "Mug"}, 0.85),
        ({"title": "STEEL CHAIR"}, 0.9),
        ({"currency": "XYZ"}, 0.9),
        ({"category": "uncategorized", "price": 0.0, "title": "MUG", "currency": "XYZ"}, 0.15),
    ],
)
def test_quality_deductions(fields, expected):
    assert score(product(**fields), QualityParams()) == expected


@pytest.mark.parametrize(
    "text,expected,removed",
    [
        ("Chair, ask bob@example.com", "Chair, ask [redacted]", 1),
        ("Call +1 (555) 123-4567 now", "Call [redacted] now", 1),
        ("Lamp 0612345678 or ann.lee@shop.co.uk", "Lamp [redacted] or [redacted]", 2),
        ("Model X-200 2024 edition", "Model X-200 2024 edition", 0),
        ("  Price 1,299.00  USD ", "Price 1,299.00 USD", 0),
    ],
)
def test_redact(text, expected, removed):
    assert redact_text(text) == (expected, removed)


def test_normalize_keeps_declared_extra_fields():
    from stages.records.normalize import normalize_batch
    from stages.records.parse import Records
    from stages.records.presets import PRESETS

    batch = Records.of(
        "shop",
        0,
        [
            (
                0,
                {
                    "id": 7,
                    "title": " A  Lamp ",
                    "price": "$1,299.00",
                    "brand": "Knoll",
                    "category": {"name": "Home Decoration"},
                },
            )
        ],
    )
    [product], dead = normalize_batch(
        batch, PRESETS["dummyjson"].fields, False, "USD", "shop", {"brand": "brand", "x": "nope"}
    )
    assert dead == []
    assert (product.id, product.title, product.price, product.currency, product.category, product.extra) == (
        "shop:7",
        "A Lamp",
        1299.0,
        "USD",
        "home-decoration",
        {"brand": "Knoll"},
    )
