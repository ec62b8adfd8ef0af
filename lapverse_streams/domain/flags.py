"""Evaluate OpenFeature flagd flag definitions: JsonLogic targeting and fractional rollouts."""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import eq, ge, gt, le, lt, ne, truediv
from typing import Any

import mmh3

STATES = frozenset({"ENABLED", "DISABLED"})
_FIELDS = ("state", "variants", "defaultVariant", "targeting", "metadata")
_MAX_WEIGHT_SUM = 2**31 - 1
_SEMVER = re.compile(r"^[vV]?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z.-]+))?(?:\+[\w.-]+)?$")
_Compare = Callable[[Any, Any], bool]
_COMPARE: dict[str, _Compare] = {"<": lt, "<=": le, ">": gt, ">=": ge}
_SEMVER_COMPARE: dict[str, _Compare] = {**_COMPARE, "=": eq, "!=": ne}


class FlagDefinitionError(ValueError):
    """A flag definition that does not follow the flagd flag-definition format."""


class _TargetingError(Exception):
    """A targeting rule that cannot be evaluated for this context."""


_Op = Callable[[list[Any], Mapping[str, Any]], Any]
_EVAL_ERRORS = (_TargetingError, ArithmeticError, TypeError, ValueError, RecursionError)


@dataclass(frozen=True)
class Resolution:
    """The value a flag resolved to, its variant and the flagd reason."""

    value: object
    variant: str | None
    reason: str  # STATIC, TARGETING_MATCH, DEFAULT, DISABLED or ERROR


def validate_flag(definition: object) -> dict[str, Any]:
    """Check a flag definition as PUT by the admin API; return it normalized."""
    flag = _normalize(definition)
    if "targeting" in flag:
        _check_operators(flag["targeting"])
    return flag


def evaluate(
    flag_key: str, definition: Mapping[str, Any] | None, tenant_id: str, now_s: int = 0
) -> Resolution:
    """Resolve a flag for a tenant; callers apply their own default when value is None."""
    if definition is None:
        return Resolution(None, None, "DEFAULT")
    try:
        flag = _normalize(definition)
    except FlagDefinitionError:
        return Resolution(None, None, "ERROR")
    if flag["state"] == "DISABLED":
        return Resolution(None, None, "DISABLED")
    variants: dict[str, Any] = flag["variants"]
    default: str = flag["defaultVariant"]
    targeting = flag.get("targeting")
    if not targeting:
        return Resolution(variants[default], default, "STATIC")
    flagd = {"flagKey": flag_key, "timestamp": now_s}
    context = {"tenantId": tenant_id, "targetingKey": tenant_id, "$flagd": flagd}
    try:
        name = _variant_name(_eval(targeting, context))
    except _EVAL_ERRORS:
        return Resolution(variants[default], default, "ERROR")
    if name is None or name not in variants:
        return Resolution(variants[default], default, "DEFAULT")
    return Resolution(variants[name], name, "TARGETING_MATCH")


def is_enabled(
    flag_key: str, definition: Mapping[str, Any] | None, tenant_id: str, now_s: int = 0
) -> bool:
    """Gate a boolean flag: enabled when undefined or DISABLED, else when the value is truthy."""
    if definition is None:
        return True
    resolution = evaluate(flag_key, definition, tenant_id, now_s)
    return resolution.reason == "DISABLED" or bool(resolution.value)


def _normalize(definition: object) -> dict[str, Any]:
    """Check the shape of a definition (not its targeting operators); default state ENABLED."""
    if not isinstance(definition, Mapping):
        raise FlagDefinitionError("flag definition must be a JSON object")
    unknown = sorted(str(key) for key in definition if key not in _FIELDS)
    if unknown:
        raise FlagDefinitionError(f"unknown field {unknown[0]!r}; allowed: {', '.join(_FIELDS)}")
    state = definition.get("state", "ENABLED")
    if not isinstance(state, str) or state not in STATES:
        raise FlagDefinitionError(f"state must be ENABLED or DISABLED, not {state!r}")
    variants = definition.get("variants")
    if not isinstance(variants, Mapping) or not variants:
        raise FlagDefinitionError("variants must be a non-empty object")
    kinds = {name: _kind(value) for name, value in variants.items()}
    for name, kind in kinds.items():
        if kind not in ("boolean", "number", "string", "object"):
            raise FlagDefinitionError(f"variants.{name} must be boolean, string, number or object")
    if len(set(kinds.values())) > 1:
        raise FlagDefinitionError("variants must all be of one type")
    default = definition.get("defaultVariant")
    if not isinstance(default, str):
        raise FlagDefinitionError("defaultVariant must be a string naming one of the variants")
    if default not in variants:
        raise FlagDefinitionError(f"defaultVariant {default!r} is not one of the variants")
    flag: dict[str, Any] = {"state": state, "variants": dict(variants), "defaultVariant": default}
    for field in ("targeting", "metadata"):
        if field in definition:
            if not isinstance(definition[field], Mapping):
                raise FlagDefinitionError(f"{field} must be a JSON object")
            flag[field] = definition[field]
    return flag


def _kind(value: object) -> str:
    """The JSON type of a value: boolean, number, string, object, or the Python type name."""
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, Mapping) else type(value).__name__


def _check_operators(rule: Any) -> None:
    """Reject targeting that names an operator this evaluator does not know."""
    if isinstance(rule, list):
        for item in rule:
            _check_operators(item)
    elif isinstance(rule, Mapping) and len(rule) == 1:
        name, args = next(iter(rule.items()))
        if name not in _LAZY and name not in _OPS:
            raise FlagDefinitionError(f"targeting uses unknown operator {name!r}")
        if name == "fractional":
            _check_fractional(args if isinstance(args, list) else [args])
        _check_operators(args)


def _check_fractional(args: list[Any]) -> None:
    """Refuse weights that are not integers >= 0, or that sum to zero or above 2**31 - 1."""
    distributions = args[1:] if args and not isinstance(args[0], list) else args
    try:
        total = sum(_weighted(item)[1] for item in distributions)
    except _TargetingError as exc:
        raise FlagDefinitionError(f"targeting: {exc}") from None
    if not 0 < total <= _MAX_WEIGHT_SUM:
        raise FlagDefinitionError("targeting: fractional weights must sum to 1 .. 2**31 - 1")


def _variant_name(result: Any) -> str | None:
    """The variant a targeting result names (flagd stringifies booleans and numbers)."""
    if result is None or isinstance(result, list | Mapping):
        return None
    return _to_str(result)


def _eval(rule: Any, data: Mapping[str, Any]) -> Any:
    """Evaluate a JsonLogic rule against data."""
    if isinstance(rule, list):
        return [_eval(item, data) for item in rule]
    if not isinstance(rule, Mapping) or len(rule) != 1:
        return rule
    name, raw = next(iter(rule.items()))
    args: list[Any] = raw if isinstance(raw, list) else [raw]
    lazy = _LAZY.get(name)
    if lazy is not None:
        return lazy(args, data)
    eager = _OPS.get(name)
    if eager is None:
        raise _TargetingError(f"unknown operator {name!r}")
    return eager([_eval(arg, data) for arg in args], data)


def _truthy(value: Any) -> bool:
    """JsonLogic truthiness: empty arrays are false, objects are true."""
    return True if isinstance(value, Mapping) else bool(value)


def _arg(args: list[Any], index: int) -> Any:
    return args[index] if index < len(args) else None


def _if(args: list[Any], data: Mapping[str, Any]) -> Any:
    for index in range(0, len(args) - 1, 2):
        if _truthy(_eval(args[index], data)):
            return _eval(args[index + 1], data)
    return _eval(args[-1], data) if len(args) % 2 == 1 else None


def _short_circuit(stop_on: bool) -> _Op:
    """`and` (stop on the first falsy value) or `or` (stop on the first truthy one)."""

    def apply(args: list[Any], data: Mapping[str, Any]) -> Any:
        value = None
        for arg in args:
            value = _eval(arg, data)
            if _truthy(value) is stop_on:
                return value
        return value

    return apply


def _var(args: list[Any], data: Mapping[str, Any]) -> Any:
    path, default = _arg(args, 0), _arg(args, 1)
    if path is None or path == "":
        return data
    value: Any = data
    for key in _to_str(path).split("."):
        if isinstance(value, Mapping) and key in value:
            value = value[key]
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return default
    return default if value is None else value


def _missing(args: list[Any], data: Mapping[str, Any]) -> list[Any]:
    keys = args[0] if args and isinstance(args[0], list) else args
    return [key for key in keys if _var([key], data) in (None, "")]


def _num(value: Any) -> int | float | None:
    """A number as JavaScript would coerce it, or None when it is not one."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    if isinstance(value, str):
        for parse in (int, float):
            try:
                return parse(value.strip())
            except ValueError:
                continue
    return None


def _arith(value: Any) -> int | float:
    """A number for arithmetic; anything else is a targeting error."""
    number = _num(value)
    if number is None:
        raise _TargetingError(f"not a number: {value!r}")
    return number


def _tidy(number: float) -> int | float:
    """Integral floats as ints, so 4 / 2 prints as 2 the way JavaScript does."""
    return int(number) if math.isfinite(number) and number.is_integer() else number


def _to_str(value: Any) -> str:
    """A value as JavaScript's Array.join would print it."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(_tidy(value)) if isinstance(value, float) else str(value)


def _strict_eq(left: Any, right: Any) -> bool:
    return _kind(left) == _kind(right) and bool(left == right)


def _loose_eq(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is None and right is None
    if isinstance(left, str | list | Mapping) and isinstance(right, str | list | Mapping):
        return bool(left == right)
    number = _num(left)
    return number is not None and number == _num(right)


def _ordered(compare: _Compare, left: Any, right: Any) -> bool:
    if isinstance(left, str) and isinstance(right, str):
        return compare(left, right)
    a, b = _num(left), _num(right)
    return a is not None and b is not None and compare(a, b)


def _compare(name: str) -> _Op:
    """A comparison that also takes the 3-argument between form (a < b < c)."""

    def apply(args: list[Any], _data: Mapping[str, Any]) -> bool:
        bounded = args[:3]
        pairs = itertools.pairwise(bounded)
        return len(bounded) > 1 and all(_ordered(_COMPARE[name], a, b) for a, b in pairs)

    return apply


def _in(args: list[Any], _data: Mapping[str, Any]) -> bool:
    needle, haystack = _arg(args, 0), _arg(args, 1)
    if isinstance(haystack, str):
        return isinstance(needle, str) and needle in haystack
    if isinstance(haystack, list):
        return any(_strict_eq(needle, item) for item in haystack)
    return False


def _division(divide: Callable[[float, float], float]) -> _Op:
    def apply(args: list[Any], _data: Mapping[str, Any]) -> int | float:
        divisor = _arith(_arg(args, 1))
        if divisor == 0:
            raise _TargetingError("division by zero")
        return _tidy(divide(_arith(_arg(args, 0)), divisor))

    return apply


def _affix(match: Callable[[str, str], bool]) -> _Op:
    def apply(args: list[Any], _data: Mapping[str, Any]) -> bool:
        text, affix = _arg(args, 0), _arg(args, 1)
        return isinstance(text, str) and isinstance(affix, str) and match(text, affix)

    return apply


def _semver_key(value: Any) -> tuple[Any, ...] | None:
    """A sort key for a semantic version (build metadata ignored), or None when invalid."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        value = _to_str(value)
    found = _SEMVER.match(value) if isinstance(value, str) else None
    if found is None:
        return None
    core = tuple(int(part or 0) for part in found.group(1, 2, 3))
    if found.group(4) is None:
        return (*core, 1, ())
    ids = tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in found.group(4).split("."))
    return (*core, 0, ids)


def _sem_ver(args: list[Any], _data: Mapping[str, Any]) -> bool:
    left, op, right = _semver_key(_arg(args, 0)), _arg(args, 1), _semver_key(_arg(args, 2))
    if len(args) != 3 or left is None or right is None:
        return False
    if op in ("^", "~"):
        width = 1 if op == "^" else 2
        return left[:width] == right[:width]
    compare = _SEMVER_COMPARE.get(op) if isinstance(op, str) else None
    return compare is not None and compare(left, right)


def _fractional(args: list[Any], data: Mapping[str, Any]) -> Any:
    """flagd fractional: murmur3 of the bucketing key mapped onto integer weights."""
    first = _arg(args, 0)
    if isinstance(first, str):
        bucket_key, distributions = first, args[1:]
    else:
        distributions = args[1:] if first is None and args else args
        flagd = data.get("$flagd")
        flag_key = flagd.get("flagKey", "") if isinstance(flagd, Mapping) else ""
        targeting_key = data.get("targetingKey")
        if not isinstance(targeting_key, str) or not targeting_key:
            return None
        bucket_key = f"{flag_key}{targeting_key}"
    weighted = [_weighted(item) for item in distributions]
    total = sum(weight for _, weight in weighted)
    if total > _MAX_WEIGHT_SUM:
        raise _TargetingError("fractional weights sum above 2**31 - 1")
    bucket = (mmh3.hash(bucket_key, signed=False) * total) >> 32
    range_end = 0
    for variant, weight in weighted:
        range_end += weight
        if bucket < range_end:
            return variant
    return None


def _weighted(item: Any) -> tuple[Any, int]:
    if not isinstance(item, list) or not item:
        raise _TargetingError("fractional distributions must be [variant, weight] arrays")
    weight = item[1] if len(item) > 1 and item[1] is not None else 1
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise _TargetingError("fractional weight must be a number")
    if weight < 0 or (isinstance(weight, float) and not weight.is_integer()):
        raise _TargetingError("fractional weight must be a non-negative integer")
    return item[0], int(weight)


_LAZY: dict[str, _Op] = {"if": _if, "and": _short_circuit(False), "or": _short_circuit(True)}
_OPS: dict[str, _Op] = {
    "var": _var,
    "missing": _missing,
    "==": lambda a, _: _loose_eq(_arg(a, 0), _arg(a, 1)),
    "!=": lambda a, _: not _loose_eq(_arg(a, 0), _arg(a, 1)),
    "===": lambda a, _: _strict_eq(_arg(a, 0), _arg(a, 1)),
    "!==": lambda a, _: not _strict_eq(_arg(a, 0), _arg(a, 1)),
    "!": lambda a, _: not _truthy(_arg(a, 0)),
    "!!": lambda a, _: _truthy(_arg(a, 0)),
    **{name: _compare(name) for name in _COMPARE},
    "in": _in,
    "cat": lambda a, _: "".join(_to_str(item) for item in a),
    "+": lambda a, _: sum(_arith(item) for item in a),
    "-": lambda a, _: -_arith(a[0]) if len(a) == 1 else _arith(_arg(a, 0)) - _arith(_arg(a, 1)),
    "*": lambda a, _: math.prod(_arith(item) for item in a),
    "/": _division(truediv),
    "%": _division(math.fmod),
    "starts_with": _affix(str.startswith),
    "ends_with": _affix(str.endswith),
    "sem_ver": _sem_ver,
    "fractional": _fractional,
}
