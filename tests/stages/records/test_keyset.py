"""DigestSet answers exactly as a set of the keys would, across bucket splits."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stages.records import keyset
from stages.records.keyset import DigestSet

# Few distinct keys, so that streams repeat them often.
str_keys = st.lists(st.text(max_size=3) | st.integers(0, 300).map(lambda i: f"shop_a:{i}"), max_size=400)


def check_invariant(keys: DigestSet) -> None:
    """Every bucket ascending without repeats, each value in the bucket its top bits name."""
    split = keys._split
    for index, bucket in enumerate(keys._buckets):
        assert list(bucket) == sorted(set(bucket))
        if split:
            assert all(index & ((1 << split) - 1) == value >> (64 - split) for value in bucket)
    assert sum(map(len, keys._buckets)) == len(keys)


def same_as_a_set(stream: list[Any], keys: DigestSet) -> None:
    plain: set[Any] = set()
    for key in stream:
        assert keys.add(key) is (key not in plain)
        plain.add(key)
    assert len(keys) == len(plain)
    assert all(key in keys for key in plain)
    check_invariant(keys)


@given(str_keys, st.integers(1, 3), st.integers(1, 4))
def test_add_and_contains_match_a_set_across_splits(stream, bucket_bits, mean):
    # 2 to 8 buckets of 1 to 4 values on average: a few hundred keys split them many times
    same_as_a_set(stream, DigestSet(bucket_bits=bucket_bits, mean=mean))


@given(
    st.lists(
        st.floats(allow_nan=False) | st.integers(-3, 3) | st.sampled_from([0.5, 1e300, -0.0]), max_size=200
    )
)
def test_numbers_as_a_set_has_them(stream):
    # 1 and 1.0, 0.0 and -0.0 are one key, as in a set
    same_as_a_set(stream, DigestSet(bucket_bits=2, mean=2))


@given(
    st.lists(st.dictionaries(st.sampled_from("abc"), st.integers(0, 2) | st.text(max_size=1)), max_size=100)
)
def test_dicts_go_by_their_json_with_keys_sorted(stream):
    keys = DigestSet(bucket_bits=2, mean=2)
    seen: list[dict[str, Any]] = []  # not hashable: by equality
    for key in stream:
        assert keys.add(dict(reversed(key.items()))) is (key not in seen)
        seen.append(key)
    check_invariant(keys)


@given(str_keys)
def test_without_siphash_every_key_takes_blake2b(stream):
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keyset, "_SIPHASH64", False)
        same_as_a_set(stream, DigestSet(bucket_bits=1, mean=3))


def test_buckets_split_as_the_set_grows():
    keys = DigestSet([f"k{i}" for i in range(1000)], bucket_bits=2, mean=8)
    # 4 buckets of 8 on average at most: 1000 keys need 4 * 2**5 = 128 buckets
    assert len(keys._buckets) == 128 and keys._split == 5
    assert all(f"k{i}" in keys for i in range(1000)) and "k1000" not in keys
    check_invariant(keys)
    assert repr(keys).startswith("<DigestSet 1,000 keys in 128 buckets")


def test_bounds_are_checked():
    with pytest.raises(ValueError, match="bucket_bits"):
        DigestSet(bucket_bits=0)
