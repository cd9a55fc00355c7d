"""safe_url: what telemetry and reports show of a request's URL."""

from __future__ import annotations

from urllib.parse import urlencode

from hypothesis import given
from hypothesis import strategies as st

from stages.http.urls import safe_url


@given(st.dictionaries(st.sampled_from(["a", "b=", "c&", "key", "ä", "d d", "skip"]), st.text(max_size=6), max_size=4))
def test_safe_url_joins_plain_queries_as_urlencode_would(params):
    url = "http://user:pw@h:8080/p?a=1&token=x"
    pairs = [("a", "1"), ("token", "REDACTED")]
    pairs += [(k, "REDACTED" if k == "key" else v) for k, v in params.items()]
    assert safe_url(url, params) == f"http://h:8080/p?{urlencode(pairs)}"
