"""`DigestSet`: a set of keys kept as 76-bit digests, 8 bytes a key (~12 of RSS).

The `dedupe` stage remembers every key it has passed on; a Python set of the
keys themselves costs ~100 bytes a key (the string object kept alive plus
its slot), 100 MB for a million products. This keeps a digest instead:

    value  = 64 bits: hash(key)                  (stored)
    bucket = 12 bits of hash(key + "\0")         (implied by where it is stored)

    buckets: [array('Q'), array('Q'), ...]   2**(12 + split) of them
    bucket j holds, ascending and without repeats, the values of the keys
    whose 12 bucket bits, followed by the top `split` bits of the value, are j

For a str, hash() is Python's own: SipHash-1-3 under the interpreter's
random per-process key (64 bits wide), cached in the string once computed;
the bucket bits come from hashing `key + "\0"`, a new string each time.
Other keys (numbers, dicts), or
every key on an interpreter whose str hash is not a 64-bit SipHash, take 80
bits of a randomly keyed BLAKE2b of their canonical bytes instead.

`add` is one `bisect` in one bucket and an insertion (C code: about 1 µs a
key, the hashes included). Buckets hold `mean` values on average; past
that, every bucket splits in two by the next top bit of its values (a
contiguous cut, since they are sorted), so an insertion's memmove stays a
few kilobytes at any size. Memory: 8 bytes a value in arrays that
over-allocate by ~6%, plus the 4,096 buckets (~300 KB once all are in use);
measured, ~12 bytes a key of RSS at a million keys (the rest is the
allocator's, as 4,096 arrays grow by turns).

Exactness: two different keys are taken for one only if their 76 bits (12
bucket bits + 64 stored) agree. For n distinct keys the chance that any pair
does is about n**2 / 2**77: 7e-12 for a million keys, 7e-8 for a hundred
million. The hash keys are secret and random (unless PYTHONHASHSEED pins
Python's), so keys cannot be crafted to collide either. (64 bits alone
would give ~3e-8 at a million keys; 128 would double the memory.)
"""

from __future__ import annotations

import hashlib
import os
import sys
from array import array
from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

import msgspec

_LOW = (1 << 64) - 1
_encode = msgspec.json.Encoder(order="sorted").encode
# str keys use hash(): a 64-bit keyed SipHash here (else BLAKE2b for every key)
_SIPHASH64 = sys.hash_info.width == 64 and sys.hash_info.algorithm.startswith("siphash")


def _canonical(key: Any) -> bytes:
    """Bytes that are equal when the keys are the same JSON value: a str's
    UTF-8, a number's repr (1.0 and 1, 0.0 and -0.0 as one), else JSON text
    with dict keys sorted (where a Python set differs: True and 1 are two
    keys here, and {"a": 1} and {"a": 1.0} are two)."""
    if isinstance(key, str):
        return b"s" + key.encode("utf-8", "surrogatepass")
    if isinstance(key, int | float) and not isinstance(key, bool):
        if isinstance(key, float) and key.is_integer():
            key = int(key)
        return b"n" + repr(key).encode()
    return b"j" + _encode(key)


class DigestSet:
    """Keys seen, by digest (see the module docstring for the structure)."""

    __slots__ = ("_buckets", "_hasher", "_len", "_limit", "_mask", "_split")

    def __init__(self, keys: Iterable[Any] = (), *, bucket_bits: int = 12, mean: int = 512) -> None:
        if not 1 <= bucket_bits <= 16 or mean < 1:
            raise ValueError("bucket_bits runs from 1 to 16, mean from 1")
        self._mask, self._split, self._len = (1 << bucket_bits) - 1, 0, 0
        self._buckets: list[array[int]] = [array("Q") for _ in range(1 << bucket_bits)]
        self._limit = mean * len(self._buckets)  # split the buckets past this many values
        self._hasher = hashlib.blake2b(digest_size=10, key=os.urandom(16))
        for key in keys:
            self.add(key)

    def _digest(self, key: Any) -> tuple[int, int]:
        """(bucket bits, stored value) of a key."""
        if _SIPHASH64 and type(key) is str:
            return hash(key + "\0") & self._mask, hash(key) & _LOW
        h = self._hasher.copy()
        h.update(_canonical(key))
        digest = int.from_bytes(h.digest(), "little")
        return (digest >> 64) & self._mask, digest & _LOW

    def _find(self, key: Any) -> tuple[array[int], int, int]:
        """The bucket the key belongs in, its value, and where the value is or would go."""
        top, value = self._digest(key)
        if self._split:
            top = (top << self._split) | (value >> (64 - self._split))
        bucket = self._buckets[top]
        return bucket, value, bisect_left(bucket, value)

    def add(self, key: Any) -> bool:
        """Add a key; False if it (its digest) was there already. (`_find`
        written out: this is dedupe's per-record cost.)"""
        if _SIPHASH64 and type(key) is str:
            top, value = hash(key + "\0") & self._mask, hash(key) & _LOW
        else:
            top, value = self._digest(key)
        if self._split:
            top = (top << self._split) | (value >> (64 - self._split))
        bucket = self._buckets[top]
        i = bisect_left(bucket, value)
        if i < len(bucket) and bucket[i] == value:
            return False
        bucket.insert(i, value)
        self._len += 1
        if self._len > self._limit:
            self._split_buckets()
        return True

    def __contains__(self, key: object) -> bool:
        bucket, value, i = self._find(key)
        return i < len(bucket) and bucket[i] == value

    def _split_buckets(self) -> None:
        """Every bucket in two by the next top bit of its values. Old buckets
        are dropped as they are cut, so the copy never holds all at once."""
        self._split += 1
        half = 1 << (64 - self._split)  # a bucket's values with the new bit set start at a multiple of this
        old, self._buckets = self._buckets, []
        old.reverse()  # cut in order, popping from the end
        while old:
            bucket = old.pop()
            cut = bisect_left(bucket, (bucket[0] // half | 1) * half) if bucket else 0
            self._buckets += (bucket[:cut], bucket[cut:])
        self._limit *= 2

    def __len__(self) -> int:
        return self._len

    def __repr__(self) -> str:
        largest = max(map(len, self._buckets))
        return f"<DigestSet {self._len:,} keys in {len(self._buckets):,} buckets (largest {largest})>"
