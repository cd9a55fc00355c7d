"""OTLP trace export requests written straight to protobuf wire format.

Building the opentelemetry-proto message objects costs about 14 µs a span
here (and the SDK's encoder about 37 µs); writing the bytes directly, with
the encoded attributes that repeat on every span (node, endpoint) cached,
costs a fraction of that, on the exporter thread but under the same GIL as
the event loop. The output is the `ExportTraceServiceRequest` message of
opentelemetry-proto (trace/v1): tests/flow/test_otlp.py decodes it with the
generated classes and compares it, field by field, with the same request
built through them, for arbitrary spans.

Wire format reminders: a field's key is `(number << 3) | wire type`
(0 varint, 1 fixed64, 2 length-delimited, 5 fixed32); int64 negatives are
ten-byte two's-complement varints; a oneof member is written even when it
holds its type's default (0, "", false), so it keeps its presence.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Mapping
from typing import Any

from opentelemetry.trace import SpanKind, Status

from .spans import _UNSET

_Q = struct.Struct("<Q").pack  # fixed64
_D = struct.Struct("<d").pack  # double
_I = struct.Struct("<I").pack  # fixed32
_TIMES = struct.Struct("<BQBQ").pack  # start and end: two fixed64 fields with their keys
# span_id (field 2) and parent_span_id (field 4): key and length (0x12 0x08, 0x22 0x08), big-endian ids
_IDS, _CHILD_IDS = struct.Struct(">HQ").pack, struct.Struct(">HQHQ").pack
_CACHE_LIMIT = 4096
_CACHED = frozenset({str, int})  # value types whose fields are cached
_Cache = dict[tuple[str, Any], bytes]  # (key, value) -> the encoded KeyValue field
# Span.flags (fixed32, field 16): sampled, "has is_remote", and is_remote.
_LOCAL, _REMOTE = b"\x85\x01" + _I(0x101), b"\x85\x01" + _I(0x301)


def varint(n: int) -> bytes:
    if 0 <= n < _SMALL:
        return _VARINTS[n]
    return _varint(n)


def _varint(n: int) -> bytes:
    """Beyond the table: >= 2**14, or negative (two's complement, ten bytes)."""
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = 1 << 14  # lengths and counts below this come from a table (two bytes at most)
_VARINTS = [bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(_SMALL)]


# Span.kind (field 6): the API's INTERNAL=0.. are OTLP's INTERNAL=1.. (0 is UNSPECIFIED).
_KIND = {kind: b"\x30" + varint(kind.value + 1) for kind in SpanKind}


def _field(key: bytes, payload: bytes) -> bytes:
    """A length-delimited field: key, length, payload."""
    n = len(payload)
    return key + (_VARINTS[n] if n < _SMALL else _varint(n)) + payload


def any_value(value: Any) -> bytes:
    """The body of an AnyValue message."""
    if isinstance(value, str):
        return _field(b"\x0a", value.encode())
    if isinstance(value, bool):
        return b"\x10\x01" if value else b"\x10\x00"
    if isinstance(value, int):
        return b"\x18" + varint(value)
    if isinstance(value, float):
        return b"\x21" + _D(value)
    if isinstance(value, bytes):
        return _field(b"\x3a", value)
    if isinstance(value, list | tuple):
        return _field(b"\x2a", b"".join(_field(b"\x0a", any_value(v)) for v in value))
    return _field(b"\x0a", str(value).encode())


class Encoder:
    """Encodes batches of flow.spans.Span for one resource and scope."""

    def __init__(self, resource: Mapping[str, Any], scope: tuple[str, str]) -> None:
        # Encoded KeyValue fields by tag, then (key, value): str and int values only.
        self._kv: dict[bytes, _Cache] = {}
        self._names: dict[tuple[str, int], bytes] = {}
        self._last_trace: tuple[int, bytes] = (0, b"")
        resource_body = self._attributes(b"\x0a", resource)
        scope_body = _field(b"\x0a", scope[0].encode()) + _field(b"\x12", scope[1].encode())
        # ResourceSpans.resource, then ScopeSpans.scope: the same for every batch.
        self._resource = _field(b"\x0a", resource_body)
        self._scope = _field(b"\x0a", scope_body)

    def _attributes(self, tag: bytes, attributes: Mapping[str, Any]) -> bytes:
        """Repeated KeyValue fields under `tag`. Each whole field is cached
        by (key, value): node, endpoint and page repeat on every span of a
        page. Only str and int values are cached, so that no key finds a
        value of another type that compares equal (1 == True == 1.0)."""
        cache = self._kv.get(tag)
        if cache is None:
            cache = self._kv[tag] = {}
        if not _CACHED.issuperset(map(type, attributes.values())):
            return self._each(cache, tag, attributes)
        # All str or int: one lookup per attribute, in C; then the misses.
        fields = list(map(cache.get, attributes.items()))
        if None in fields:
            fields = [
                field if field is not None else self._remember(cache, tag, item)
                for field, item in zip(fields, attributes.items(), strict=True)
            ]
        return b"".join(fields)

    @staticmethod
    def _remember(cache: _Cache, tag: bytes, item: tuple[str, Any]) -> bytes:
        if len(cache) >= _CACHE_LIMIT:
            cache.clear()
        field = cache[item] = _key_value(tag, *item)
        return field

    def _each(self, cache: _Cache, tag: bytes, attributes: Mapping[str, Any]) -> bytes:
        """Attributes with other values too (bool, float, lists; None is left out)."""
        return b"".join([self._one(cache, tag, item) for item in attributes.items()])

    def _one(self, cache: _Cache, tag: bytes, item: tuple[str, Any]) -> bytes:
        """One KeyValue field (cached for a str or int value; none for None)."""
        kind = type(item[1])
        if kind is str or kind is int:
            field = cache.get(item)
            return field if field is not None else self._remember(cache, tag, item)
        return b"" if item[1] is None else _key_value(tag, *item)

    def _trace_id(self, trace_id: int) -> bytes:
        """The trace id field; a run is one trace, so this is computed once."""
        if self._last_trace[0] != trace_id:
            self._last_trace = (trace_id, b"\x0a\x10" + trace_id.to_bytes(16, "big"))
        return self._last_trace[1]

    def span(self, span: Any) -> bytes:
        """The body of a Span message."""
        # SpanContexts are read by index (trace_id, span_id, is_remote): the
        # named properties are Python calls.
        own, parent = span.get_span_context(), span.parent
        last = self._last_trace
        parts = [
            last[1] if last[0] == own[0] else self._trace_id(own[0]),
            _IDS(0x1208, own[1]) if parent is None else _CHILD_IDS(0x1208, own[1], 0x2208, parent[1]),
        ]
        head = self._names.get((span.name, id(span.kind)))
        parts.append(head if head is not None else self._head(span.name, span.kind))
        parts.append(_TIMES(0x39, span.start_ns, 0x41, span.end_ns))
        if span.attributes:
            parts.append(self._attributes(b"\x4a", span.attributes))
        if span.events:
            parts.extend(self._event(*event) for event in span.events)
        if span.links:
            parts.extend(self._link(link) for link in span.links)
        if span.status is not _UNSET:
            parts.append(_status(span.status))
        parts.append(_REMOTE if parent is not None and parent[2] else _LOCAL)
        return b"".join(parts)

    def _event(self, name: str, when: int, attributes: Mapping[str, Any]) -> bytes:
        event = b"\x09" + _Q(when) + _field(b"\x12", name.encode())
        return _field(b"\x5a", event + self._attributes(b"\x1a", attributes))

    def _link(self, link: Any) -> bytes:
        context = link.context
        body = b"\x0a\x10" + context.trace_id.to_bytes(16, "big") + b"\x12\x08"
        body += context.span_id.to_bytes(8, "big") + self._attributes(b"\x22", link.attributes or {})
        return _field(b"\x6a", body)

    def _head(self, name: str, kind: SpanKind) -> bytes:
        """The name and kind fields (a handful of names per run: cached by
        the kind's identity, as an enum member hashes in Python)."""
        if len(self._names) >= _CACHE_LIMIT:
            self._names.clear()
        head = self._names[(name, id(kind))] = _field(b"\x2a", name.encode()) + _KIND[kind]
        return head

    def request(self, spans: Iterable[Any]) -> bytes:
        """A serialized ExportTraceServiceRequest holding `spans`."""
        span = self.span
        scope_spans = self._scope + b"".join([_field(b"\x12", span(s)) for s in spans])
        resource_spans = self._resource + _field(b"\x12", scope_spans)
        return _field(b"\x0a", resource_spans)


def _key_value(tag: bytes, key: str, value: Any) -> bytes:
    """A KeyValue field under `tag`."""
    return _field(tag, _field(b"\x0a", key.encode()) + _field(b"\x12", any_value(value)))


def _status(status: Status) -> bytes:
    """The Status field; UNSET (code 0) has none. The codes are the same in both."""
    code = status.status_code.value
    if not code:
        return b""
    message = status.description or ""
    body = (_field(b"\x12", message.encode()) if message else b"") + b"\x18" + varint(code)
    return _field(b"\x7a", body)
