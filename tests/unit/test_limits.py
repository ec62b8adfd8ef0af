"""The size shortcut never lets through a document that the full check rejects."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lapverse_streams.events.codec import PoisonMessage, decode
from lapverse_streams.events.limits import JsonLimits, LimitExceeded, check_json, fits_by_size

SMALL = JsonLimits(max_depth=3, max_string_chars=40, max_array_items=6, max_object_keys=4)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-9, 9) | st.text(max_size=50),
    lambda children: (
        st.lists(children, max_size=8) | st.dictionaries(st.text(max_size=4), children, max_size=6)
    ),
    max_leaves=30,
)


@settings(max_examples=2000)
@given(json_values)
def test_a_document_that_fits_by_size_passes_the_full_check(value: Any) -> None:
    if fits_by_size(orjson.dumps(value), SMALL):
        check_json(value, SMALL)  # raises, failing the test, if the shortcut was wrong


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[" * 40 + b"]" * 40, "too_deep"),
        (orjson.dumps({"data": {"s": "x" * 20_000}}), "too_large"),
        (orjson.dumps({"data": list(range(10_001))}), "too_large"),
        (orjson.dumps({"data": {str(i): 0 for i in range(1_001)}}), "too_large"),
    ],
)
def test_records_over_a_limit_are_still_refused(raw: bytes, reason: str) -> None:
    assert not fits_by_size(raw)
    with pytest.raises(PoisonMessage) as caught:
        decode(raw)
    assert caught.value.reason == reason


def test_small_documents_take_the_shortcut() -> None:
    assert fits_by_size(orjson.dumps({"type": "x", "data": {"a": [1, 2, {"b": "c"}]}}))
    with pytest.raises(LimitExceeded):
        check_json([[[[[]]]]], SMALL)
    assert not fits_by_size(b"[[[[[]]]]]", SMALL)
