"""EO-MQS's total order of items and its paging tokens, on real item dicts and real tokens.

The order must be total whatever a site puts in a property (else the k-way merge breaks or
raises), and a token is the only state a search keeps between pages: it must come back
exactly, and anything altered, foreign or old must be refused with a clear 400.
"""

from __future__ import annotations

import stat
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cscale_extensions.services.eomqs.errors import ApiError
from cscale_extensions.services.eomqs.ordering import key_function
from cscale_extensions.services.eomqs.paging_token import (
    MAX_TOKEN_CHARS,
    TokenSigner,
    resolve_secret,
)
from cscale_extensions.services.eomqs.validation import SortField

CLOUD = "properties.eo:cloud_cover"
json_value = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**53), 2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)


def item(n: int, props: dict[str, Any], coll: str = "c1") -> dict[str, Any]:
    return {"id": f"i{n:03d}", "collection": coll, "properties": props}


# --------------------------------------------------------------------------- ordering


@settings(max_examples=80, deadline=None)
@given(values=st.lists(json_value, min_size=1, max_size=12), desc=st.booleans())
def test_any_property_values_sort_totally_numbers_then_strings_then_the_rest(values, desc):
    """Whatever sites send: no TypeError, numbers (and booleans) before strings before
    missing or non-scalar values, in both directions; among numbers desc reverses asc."""
    items = [item(n, {"eo:cloud_cover": v}) for n, v in enumerate(values)]
    key = key_function((SortField(CLOUD, desc),))
    ordered = sorted(items, key=key)

    def kind(i: dict[str, Any]) -> int:
        v = i["properties"]["eo:cloud_cover"]
        return 0 if isinstance(v, bool | int | float) else 1 if isinstance(v, str) else 2

    assert [kind(i) for i in ordered] == sorted(kind(i) for i in ordered)
    numbers = [float(i["properties"]["eo:cloud_cover"]) for i in ordered if kind(i) == 0]
    assert numbers == sorted(numbers, reverse=desc)
    texts = [i["properties"]["eo:cloud_cover"] for i in ordered if kind(i) == 1]
    assert texts == sorted(texts, reverse=desc)
    # ties are decided by id then collection, ascending, in both directions
    for a, b in zip(ordered, ordered[1:], strict=False):
        if key(a)[0] == key(b)[0]:
            assert (a["id"], a["collection"]) < (b["id"], b["collection"])


def test_datetimes_compare_as_instants_and_start_datetime_stands_in():
    key = key_function((SortField("properties.datetime", False),))
    spellings = ["2021-01-01T01:00:00+01:00", "2021-01-01T00:00:00Z", "2021-01-01T00:00:00.000z"]
    assert len({key(item(0, {"datetime": s}))[0] for s in spellings}) == 1
    later = item(1, {"datetime": None, "start_datetime": "2021-01-01T00:00:01Z"})
    undated = item(2, {"datetime": None})
    garbage = item(3, {"datetime": "yesterday"})
    ordered = sorted([undated, garbage, later, item(0, {"datetime": spellings[0]})], key=key)
    assert [i["id"] for i in ordered] == ["i000", "i001", "i002", "i003"]
    desc = key_function((SortField("properties.datetime", True),))
    ordered = sorted([undated, later, item(0, {"datetime": spellings[1]})], key=desc)
    assert [i["id"] for i in ordered] == ["i001", "i000", "i002"]  # missing still last


def test_the_same_item_from_two_sites_has_one_key_and_distinct_items_never_share_one():
    key = key_function(())
    a = item(7, {"datetime": "2021-01-01T00:00:00Z"})
    assert key(a) == key(dict(a, assets={"x": {}}))  # copies of one item (assets may differ)
    assert key(a) != key(dict(a, collection="c2"))
    assert key(a) != key(dict(a, id="i008"))


# --------------------------------------------------------------------------- paging tokens

state = st.dictionaries(
    st.text(min_size=1, max_size=6),
    st.fixed_dictionaries({"m": st.sampled_from("sudwx"), "o": st.integers(0, 10**6)}),
    min_size=1,
    max_size=4,
)


def _code(fn, *args) -> str:
    with pytest.raises(ApiError) as err:
        fn(*args)
    assert err.value.status == 400
    return err.value.code


@settings(max_examples=100, deadline=None)
@given(st_=state, query=st.text(max_size=30))
def test_a_token_gives_back_exactly_its_state(st_, query):
    signer = TokenSigner(b"secret", 3600)
    assert signer.load(signer.dump(st_, query, "fed"), query, "fed") == st_


@settings(max_examples=120, deadline=None)
@given(data=st.data(), st_=state)
def test_any_altered_character_makes_the_token_invalid(data, st_):
    signer = TokenSigner(b"secret", 3600)
    token = signer.dump(st_, "q", "fed")
    at = data.draw(st.integers(0, len(token) - 1))
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
    new = data.draw(st.sampled_from(alphabet).filter(lambda ch: ch != token[at]))
    altered = token[:at] + new + token[at + 1 :]
    assert _code(signer.load, altered, "q", "fed") == "InvalidToken"


def test_foreign_old_or_oversized_tokens_are_refused_clearly():
    signer = TokenSigner(b"secret", 3600)
    token = signer.dump({"a": {"m": "d"}}, "q", "fed")
    assert _code(signer.load, token, "other query", "fed") == "InvalidToken"
    assert _code(signer.load, token, "q", "other federation") == "StaleToken"
    assert _code(TokenSigner(b"other", 3600).load, token, "q", "fed") == "InvalidToken"
    assert _code(TokenSigner(b"secret", -1).load, token, "q", "fed") == "StaleToken"
    assert _code(signer.load, "x" * (MAX_TOKEN_CHARS + 1), "q", "fed") == "InvalidToken"
    assert _code(signer.load, "no-dot-at-all", "q", "fed") == "InvalidToken"


def test_the_token_secret_is_kept_private_and_reused(tmp_path):
    assert resolve_secret("configured", None, str(tmp_path)) == b"configured"
    first = resolve_secret(None, None, str(tmp_path))
    path = tmp_path / "secrets" / "eomqs_token_secret"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert resolve_secret(None, None, str(tmp_path)) == first  # tokens survive a restart
    assert len(first) >= 32
    explicit = tmp_path / "elsewhere" / "s"
    assert resolve_secret(None, str(explicit), None) == explicit.read_bytes()
    # nowhere to keep one: a random secret per process (tokens end with it)
    assert resolve_secret(None, None, None) != resolve_secret(None, None, None)
