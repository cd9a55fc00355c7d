"""safe_url: what telemetry and reports show of a request's URL."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import example, given
from hypothesis import strategies as st

from stages.http.urls import safe_url

names = st.sampled_from(["a", "b=", "c&", "key", "ä", "d d", "skip", "limit", ""])
values = st.one_of(st.text(max_size=6), st.sampled_from(["300", "monkey", "a=b", "x&y", "", "~._-"]))


@given(st.dictionaries(names, values, max_size=4), st.booleans())
@example({"a": "b&c=d"}, False)  # as many '&' as '=': still one pair
@example({"a=x&b": "y"}, False)
def test_safe_url_joins_plain_queries_as_urlencode_would(params, with_query):
    """With and without a query in the URL itself, and names or values that
    hold "&" or "=": the same as urlencode, secrets replaced."""
    url = "http://user:pw@h:8080/p?a=1&token=x" if with_query else "http://user:pw@h:8080/p"
    pairs = [("a", "1"), ("token", "REDACTED")] if with_query else []
    pairs += [(k, "REDACTED" if k == "key" else v) for k, v in params.items()]
    expected = f"http://h:8080/p?{urlencode(pairs)}" if pairs else "http://h:8080/p"
    assert safe_url(url, params) == expected
