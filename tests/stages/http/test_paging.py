"""Pager's repeat check: a page with an earlier page's records, found from
the pages' own text. Records here are fixed-width (`{"id":N}`, N one
digit), so pages often share their cheap key (lengths, first and last
record) while their records differ: only the full text may decide."""

from __future__ import annotations

import msgspec
from hypothesis import given
from hypothesis import strategies as st

from stages.http.paging import Pager, PageRequest

PAGE = st.lists(st.integers(0, 3), min_size=2, max_size=4)  # ids on a page


def pager() -> Pager:
    return Pager("shop", "http://127.0.0.1/p", "offset", 4, params={}, headers={},
                 items_path=None, total_path=None, cursor_path=None)  # fmt: skip


def observe_all(pages: list[list[int]]) -> Pager:
    """Observe pages 0, 1, ... in order; stop at the first repeat, as the planner does."""
    walk = pager()
    for number, ids in enumerate(pages):
        body = msgspec.json.encode([{"id": i} for i in ids])
        walk.observe(PageRequest("shop", walk.url, {}, {}, number, walk), body, {})
        if walk.repeated:
            break
    return walk


@given(st.lists(PAGE, min_size=1, max_size=12))
def test_a_repeat_is_reported_only_for_pages_with_the_same_records(pages: list[list[int]]) -> None:
    walk = observe_all(pages)
    if walk.repeated is not None:
        page, earlier = walk.repeated
        assert earlier < page and pages[page] == pages[earlier]
        assert all(ids != pages[0] for ids in pages[1:page])  # page 0's repeat is never missed
        counts = [pages[:page].count(ids) for ids in pages[:page]]
        assert max(counts) <= 2  # nothing came a third time unnoticed


@given(st.lists(PAGE, min_size=1, max_size=12))
def test_a_repeat_of_the_first_page_is_seen_at_once_of_a_later_page_by_its_third_showing(
    pages: list[list[int]],
) -> None:
    walk = observe_all(pages)
    again = [n for n in range(1, len(pages)) if pages[n] == pages[0]]
    third = [n for n in range(len(pages)) if pages[: n + 1].count(pages[n]) == 3]
    expected = min(again[:1] + third[:1], default=None)
    if expected is None:
        assert walk.repeated is None or pages.count(pages[walk.repeated[0]]) >= 2
    else:
        assert walk.repeated is not None and walk.repeated[0] <= expected


def test_pages_alike_in_lengths_and_ends_but_not_within_are_no_repeat() -> None:
    pinned = [[0, n, 9] for n in range(1, 9)]  # the same first and last record, the same widths
    assert observe_all([[0, 1, 2], *pinned]).repeated is None
    # Page 8 shares page 1's cheap key, so it was hashed in full: its records again are seen at once.
    assert observe_all([[0, 1, 2], *pinned, pinned[-1]]).repeated == (9, 8)


def test_a_later_page_unlike_any_before_is_known_again_by_its_third_showing() -> None:
    assert observe_all([[0, 1, 2], [3, 1, 3], [3, 1, 3]]).repeated is None  # a duplicate page, maybe
    assert observe_all([[0, 1, 2], [3, 1, 3], [3, 1, 3], [3, 1, 3]]).repeated == (3, 2)
    assert observe_all([[0, 1, 2], [3, 1, 3], [0, 1, 2]]).repeated == (2, 0)  # the first page: at once
