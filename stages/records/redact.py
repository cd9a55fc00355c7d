"""`redact`: trim text fields and remove personal data (e-mail addresses and
phone numbers) from them, replacing each with `[redacted]`; each removal is
counted."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow.registry import Params, stage

from .items import ProductBatch

EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# International or national numbers: 7+ digits with optional +, spaces, dots,
# dashes and parentheses between them.
PHONE = re.compile(r"(?<![\w.-])\+?\(?\d[\d\s().-]{5,}\d(?![\w.])")


class RedactParams(Params):
    fields: list[str] = msgspec.field(default_factory=lambda: ["title"])  # Product text fields to clean
    replacement: str = "[redacted]"


def redact_text(text: str, replacement: str = "[redacted]") -> tuple[str, int]:
    """(cleaned text, number of removals). A phone number needs 7+ digits, so
    model numbers and prices stay."""
    removed = 0

    def phone(match: re.Match[str]) -> str:
        nonlocal removed
        if sum(c.isdigit() for c in match[0]) < 7:
            return match[0]
        removed += 1
        return replacement

    text, emails = EMAIL.subn(replacement, text)
    text = PHONE.sub(phone, text)
    return " ".join(text.split()), removed + emails


@stage("redact", RedactParams, consumes=ProductBatch, produces=ProductBatch, spans=False)
async def redact(source: AsyncIterator[Any], params: RedactParams, ctx: Any) -> AsyncIterator[Any]:
    """Trim text fields; replace e-mail addresses and phone numbers in them."""
    async for batch in source:
        cleaned = []
        for product in batch.products:
            changes = {}
            for name in params.fields:
                value = getattr(product, name, None)
                if isinstance(value, str):
                    text, removed = redact_text(value, params.replacement)
                    if removed:
                        ctx.count("redacted", removed)
                    if text != value:
                        changes[name] = text
            cleaned.append(msgspec.structs.replace(product, **changes) if changes else product)
        yield msgspec.structs.replace(batch, products=cleaned)


KIND = redact
