"""`redact`: trim text fields and remove personal data (e-mail addresses and
phone numbers) from them, replacing each with `[redacted]`; each removal is
counted.

Products: the `fields` named are cleaned. Job results (the jobs family):
every string of the result is, and every member whose key names personal
data (`keys`: name, email, phone, address, ...; matched ignoring case, `_`
and `-`) is removed whole, at any depth. `clean_value` does the same for
any JSON value (the `jobs` intake cleans payloads with it)."""

from __future__ import annotations

import functools
import re
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from flow.registry import SAME, Params, stage
from stages.jobs.items import JobResult

from .items import ProductBatch

_DIGIT = re.compile(r"\d")
EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
# International or national numbers: 7+ digits with optional +, spaces, dots,
# dashes and parentheses between them.
PHONE = re.compile(r"(?<![\w.-])\+?\(?\d[\d\s().-]{5,}\d(?![\w.])")
# What the phone pattern matches that is no phone number: a date, an IPv4 address.
NOT_PHONE = re.compile(r"\d{4}-\d{2}-\d{2}|\d{1,3}(?:\.\d{1,3}){3}")
DEPTH = 64  # nesting a job's value may have (deeper: refused, not cleaned by recursion)


PERSONAL_KEYS = ("name", "full_name", "first_name", "last_name", "user_name", "username", "email",
                 "email_address", "phone", "phone_number", "telephone", "mobile", "mobile_number", "address",
                 "address_line1", "address_line2", "billing_address", "shipping_address", "street",
                 "postcode", "postal_code", "zip", "zip_code", "ssn", "date_of_birth", "dob", "birthdate",
                 "password", "iban", "card_number")  # fmt: skip


class RedactParams(Params):
    fields: list[str] = msgspec.field(default_factory=lambda: ["title"])  # Product text fields to clean
    replacement: str = "[redacted]"
    # Job results: members with these keys are removed whole, at any depth
    keys: list[str] = msgspec.field(default_factory=lambda: list(PERSONAL_KEYS))


@functools.lru_cache(maxsize=4096)
def _key(name: str) -> str:
    """A key as personal keys are compared: lower case, letters and digits
    (memoised: a payload's keys come again and again)."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def personal(keys: list[str] | tuple[str, ...]) -> frozenset[str]:
    """The keys to remove, normalised as `clean_value` compares them."""
    return frozenset(map(_key, keys))


def clean_value(
    value: Any, keys: frozenset[str], replacement: str = "[redacted]", depth: int = 0
) -> tuple[Any, int]:
    """A JSON value cleaned: members under personal `keys`, or whose key
    holds an e-mail address or phone number, removed; strings trimmed (their
    inner spacing kept) with e-mail addresses and phone numbers replaced;
    (the value, how many removals). ValueError past DEPTH levels."""
    if depth > DEPTH:
        raise ValueError(f"nested deeper than {DEPTH} levels")
    if isinstance(value, str):
        return redact_text(value, replacement, collapse=False)
    if isinstance(value, list):
        cleaned = [clean_value(v, keys, replacement, depth + 1) for v in value]
        return [v for v, _ in cleaned], sum(n for _, n in cleaned)
    if isinstance(value, dict):
        out, removed = {}, 0
        for k, v in value.items():
            if _key(k) in keys or redact_text(k, replacement)[1]:
                removed += 1
                continue
            out[k], n = clean_value(v, keys, replacement, depth + 1)
            removed += n
        return out, removed
    return value, 0


def redact_text(text: str, replacement: str = "[redacted]", collapse: bool = True) -> tuple[str, int]:
    """(cleaned text, number of removals). A phone number needs 7+ digits, so
    model numbers and prices stay, and dates and IPv4 addresses are none.
    `collapse`: runs of spacing become one space (else only the ends are trimmed)."""
    if "@" not in text and _DIGIT.search(text) is None:  # neither an address nor a number can be there
        return (" ".join(text.split()) if collapse else text.strip()), 0
    removed = 0

    def phone(match: re.Match[str]) -> str:
        nonlocal removed
        if sum(c.isdigit() for c in match[0]) < 7 or NOT_PHONE.fullmatch(match[0].strip()):
            return match[0]
        removed += 1
        return replacement

    text, emails = EMAIL.subn(replacement, text)
    text = PHONE.sub(phone, text)
    return (" ".join(text.split()) if collapse else text.strip()), removed + emails


def _cleaned_result(job: JobResult, keys: frozenset[str], replacement: str, ctx: Any) -> JobResult:
    """A job's result and error cleaned; a result that cannot be cleaned (too
    deep) is dropped and the job failed, never stored as it came."""
    try:
        result, removed = clean_value(job.result, keys, replacement)
    except ValueError as err:
        why = f"the vendor's result could not be cleaned ({err}), so it was not kept"
        return msgspec.structs.replace(job, status="failed", result=None, error=why)
    error, more = redact_text(job.error, replacement, collapse=False) if job.error else (job.error, 0)
    if removed + more:
        ctx.count("redacted", removed + more)
    return msgspec.structs.replace(job, result=result, error=error)


@stage("redact", RedactParams, consumes=(ProductBatch, JobResult), produces=SAME, spans=False)
async def redact(source: AsyncIterator[Any], params: RedactParams, ctx: Any) -> AsyncIterator[Any]:
    """Trim text fields; replace e-mail addresses and phone numbers; drop personal keys of job results."""
    keys = personal(params.keys)
    async for batch in source:
        if isinstance(batch, JobResult):
            yield _cleaned_result(batch, keys, params.replacement, ctx)
            continue
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
