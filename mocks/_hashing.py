"""Counter-based randomness: every draw is a pure function of (seed, stream, n).

Nothing is stateful, so product 912,345 is generated without generating the
912,344 before it, and the fault for the 3rd attempt at a page is the same
whichever order concurrent clients send their requests in.
"""

from __future__ import annotations

import hashlib

MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_UNIT = 2.0**-53


def mix64(x: int) -> int:
    """SplitMix64's finaliser: a bijection on 64-bit ints with full avalanche."""
    x = (x + _GOLDEN) & MASK
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def stream_key(seed: int, stream: str) -> int:
    """A 64-bit key for one named stream of draws under one seed."""
    digest = hashlib.blake2b(f"{seed}:{stream}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little")


def draw(key: int, n: int) -> int:
    """The n-th 64-bit draw of a stream.

    CPython's tuple hash (xxHash-style, in C) combines key and n, and one
    multiply-xorshift round spreads it over 64 bits: half the cost of a full
    SplitMix64 finaliser in Python, which matters at 20 draws per page. Ints
    hash the same in every process (PYTHONHASHSEED only salts str and bytes),
    so draws are reproducible on 64-bit CPython."""
    x = (hash((key, n)) * _GOLDEN) & MASK
    return x ^ (x >> 31)


def text_draw(key: int, text: str, n: int) -> int:
    """The n-th draw for a text key (a request's path and query)."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return draw(key ^ int.from_bytes(digest, "little"), n)


def unit(bits: int) -> float:
    """Top 53 bits of a draw as a float uniform on [0, 1)."""
    return (bits >> 11) * _UNIT
