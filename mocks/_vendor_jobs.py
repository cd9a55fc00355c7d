"""What a mock vendor makes of a job, apart from serving it: the request's
parsing (400s), a job's records (a function of payload and seed, with
personal data on purpose), callback signatures, and the job and callback
records `/__stats` lists. mocks/vendors.py serves them."""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import unicodedata
from typing import Annotated, Any
from urllib.parse import urlsplit

import msgspec

from ._hashing import stream_key, text_draw, unit

LOOPBACK = {"127.0.0.1", "localhost"}

FIRST = ("Ana", "Björn", "Chloé", "Dmitri", "Eve", "Farah", "Goran", "Hana", "Iñigo", "Jun", "Kofi", "Lena")
LAST = ("García", "Olsen", "Dubois", "Petrov", "Smith", "Haddad", "Novák", "Sato", "Ivanova", "Chen",
        "Mensah", "Müller")  # fmt: skip
DOMAINS = ("example.com", "mail.example.org", "example.net")  # RFC 2606: never anyone's
PHONES = ("+1-555-{a:03d}-{b:04d}", "(555) {a:03d}-{b:04d}", "555.{a:03d}.{b:04d}", "+44 20 7946 {b:04d}")
PADS = ("{}", "{}", "{}", "{}", " {}", "{}  ")  # stray whitespace on a third of the names
_FIELDS = ((0, 255), (8, 255), (16, 255), (24, 255), (32, 3), (34, 1023), (44, 16383), (58, 1))  # shift, mask
REASONS = ("payload rejected: unsupported region", "no match for the subject",
           "quota for this account exhausted", "upstream source unavailable")  # fmt: skip


def callback_signature(secret: str, timestamp: str | int, body: bytes) -> str:
    """`sha256=` + hex HMAC-SHA256(secret, "<timestamp>." + body): X-Flow-Signature."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def _canonical(value: Any) -> str:
    return msgspec.json.encode(value, order="sorted").decode()


def _score(key: int, value: Any) -> float:
    return round(unit(text_draw(key, _canonical(value), 0)), 3)


def vendor_records(payload: dict[str, Any], seed: int = 0) -> list[dict[str, Any]]:
    """A job's records, a function of payload and seed: the payload's
    `records` echoed with a `score`, else 1 to 3 made-up customers whose
    names, e-mails and phone numbers are deliberately personal data."""
    key = stream_key(seed, "vendor.records")
    if isinstance(payload.get("records"), list):
        return [
            {**r, "score": _score(key, r)} if isinstance(r, dict) else {"value": r, "score": _score(key, r)}
            for r in payload["records"]
        ]
    text = _canonical(payload)
    records = []
    for i in range(1 + text_draw(key, text, 0) % 3):
        # One draw per customer, cut into disjoint bit fields: 8 bits each for
        # first and last name, domain, padding; 2 for the phone's format, 10
        # and 14 for its numbers, 1 for the e-mail's case.
        bits = text_draw(key, text, i + 1)
        field = [(bits >> shift) & mask for shift, mask in _FIELDS]
        first, last = FIRST[field[0] % 12], LAST[field[1] % 12]
        ascii_name = unicodedata.normalize("NFKD", f"{first}.{last}").encode("ascii", "ignore").decode()
        email = f"{ascii_name}@{DOMAINS[field[2] % 3]}"
        records.append({
            "id": f"cus_{text_draw(key, text, 200 + i) & 0xFFFFFFFF:08x}",
            "name": PADS[field[3] % 6].format(f"{first} {last}"),
            "email": email if field[7] else email.lower(),
            "phone": PHONES[field[4]].format(a=field[5] % 1000, b=field[6] % 10_000),
            "score": round(unit(text_draw(key, text, 100 + i)), 3),
        })  # fmt: skip
    return records


class JobRequest(msgspec.Struct):
    """A job as POSTed; anything else in the body is ignored."""

    request_id: Annotated[str, msgspec.Meta(min_length=1)]
    payload: dict[str, Any]
    callback_url: str | None = None  # async_vendor: required, http:// on loopback


def parse_job(body: bytes, callback: bool) -> JobRequest:
    """The body's job; ValueError (400) with the reason when it is none."""
    try:
        job = msgspec.json.decode(body, type=JobRequest)
    except msgspec.DecodeError as err:
        raise ValueError(f"bad job: {err}") from None
    if callback:
        url = urlsplit(job.callback_url or "")
        if url.scheme != "http" or url.hostname not in LOOPBACK:
            where = f"got {job.callback_url!r}" if job.callback_url else "it is missing"
            raise ValueError(f"callback_url must be http://127.0.0.1... or http://localhost...: {where}")
    return job


@dataclasses.dataclass(slots=True)
class Job:
    request_id: str
    t: float  # arrival, seconds since start
    reply: dict[str, Any]  # sync: the 200 body; async: the callback body
    vendor_job_id: str | None = None
    callback: str | None = None  # async: "once", "twice" or "lost"
    delay: float = 0.0  # async: seconds from acceptance to the first copy
    repeats: int = 0
    signed: tuple[bytes, dict[str, str]] | None = None  # body and headers, made at the first send

    @property
    def status(self) -> str:
        return self.reply["status"]  # type: ignore[no-any-return]


@dataclasses.dataclass(slots=True)
class Delivery:
    """One copy of a callback: its attempts and how it ended."""

    request_id: str
    vendor_job_id: str
    copy: int  # 0, or 1 for the duplicate
    due: float  # seconds since start
    outcome: str = "pending"  # delivered (2xx), refused (other non-5xx), gave_up, cancelled
    attempts: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # {t, status, error}
