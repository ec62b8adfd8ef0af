"""Inputs the tests build as an attacker would: JSON nested deeper than anything should parse."""

from __future__ import annotations

from typing import Any

import orjson

PLACEHOLDER = '"x":[]'


def nest_deeply(value: Any, depth: int = 251) -> bytes:
    """`value` as JSON bytes, its one `"x": []` replaced by arrays nested `depth` levels deep."""
    raw = orjson.dumps(value).decode()
    assert raw.count(PLACEHOLDER) == 1, "mark the place to nest with one `x: []`"
    return raw.replace(PLACEHOLDER, '"x":' + "[" * depth + "]" * depth).encode()
