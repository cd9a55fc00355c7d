"""One table of API styles: what flow reads is what the mocks imitate."""

from __future__ import annotations

from mocks import STYLES
from stages.records.presets import PRESETS


def test_every_mock_style_has_a_preset_and_no_other():
    assert tuple(PRESETS) == tuple(STYLES)


def test_the_style_literal_names_the_presets():
    from typing import get_args

    from stages.records.presets import Style

    assert get_args(Style) == tuple(PRESETS)
