"""Bounds on JSON that crosses a trust boundary: nesting depth, string, array and object sizes."""

from __future__ import annotations

from dataclasses import dataclass


class LimitExceeded(ValueError):
    """A JSON value is deeper or larger than allowed; `reason` is a stable label."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class JsonLimits:
    """How deep and how large a JSON value may be (spec section 9)."""

    max_depth: int = 32
    max_string_chars: int = 16_384
    max_array_items: int = 10_000
    max_object_keys: int = 1_000


DEFAULT_LIMITS = JsonLimits()


def check_json(value: object, limits: JsonLimits = DEFAULT_LIMITS) -> None:
    """Raise LimitExceeded naming the first limit `value` breaks (iterative: no recursion)."""
    stack: list[tuple[object, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, str):
            if len(item) > limits.max_string_chars:
                raise LimitExceeded(
                    "too_large", f"a string is longer than {limits.max_string_chars} characters"
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if depth > limits.max_depth:
            raise LimitExceeded(
                "too_deep", f"JSON nesting is deeper than {limits.max_depth} levels"
            )
        if isinstance(item, list):
            if len(item) > limits.max_array_items:
                raise LimitExceeded(
                    "too_large", f"an array has more than {limits.max_array_items} items"
                )
            stack.extend((child, depth + 1) for child in item)
        else:
            if len(item) > limits.max_object_keys:
                raise LimitExceeded(
                    "too_large", f"an object has more than {limits.max_object_keys} keys"
                )
            for key, child in item.items():
                stack.append((key, depth))
                stack.append((child, depth + 1))


def fits_by_size(raw: bytes, limits: JsonLimits = DEFAULT_LIMITS) -> bool:
    """True when a JSON document's bytes alone prove it within every limit, unparsed.

    A document of n bytes holds no string of more than n characters, no array of more than
    n/2 items (`0,` per item) and no object of more than n/5 keys (`"":0,` per key), and it
    nests no deeper than its count of `[` and `{` (those inside strings only overcount).
    False says nothing: `check_json` decides.
    """
    size = len(raw)
    return (
        size <= limits.max_string_chars
        and size <= 2 * limits.max_array_items
        and size <= 5 * limits.max_object_keys
        and raw.count(b"[") + raw.count(b"{") <= limits.max_depth
    )


def check_document(raw: bytes, value: object, limits: JsonLimits = DEFAULT_LIMITS) -> None:
    """`check_json` of `value`, parsed from `raw`, without the walk when its size proves it."""
    if not fits_by_size(raw, limits):  # most documents: no walk of the tree
        check_json(value, limits)
