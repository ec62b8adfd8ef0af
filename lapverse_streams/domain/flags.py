"""Evaluate flagd flag definitions with the OpenFeature flagd evaluator's targeting engine.

JsonLogic and the flagd operators (`fractional`, `sem_ver`, `starts_with`, `ends_with`) are
openfeature-flagd-core's. This module keeps the port the platform calls, the admin API's
validation, and the few operator semantics the port is stricter about
(docs/decisions/0005-flag-evaluation-by-openfeature.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from json_logic import jsonLogic
from json_logic.builtins import to_string
from openfeature.contrib.tools.flagd.core.targeting.custom_ops import (
    fractional,
    normalize_version,
    sem_ver,
)
from openfeature.contrib.tools.flagd.core.targeting.targeting import OPERATORS

STATES = frozenset({"ENABLED", "DISABLED"})
_FIELDS = ("state", "variants", "defaultVariant", "targeting", "metadata")
_MAX_WEIGHT_SUM = 2**31 - 1
# Operators json_logic's apply() evaluates itself, lazily, before its operator table.
_CONTROL = frozenset({"if", "?:", "and", "or", "filter", "reduce", "map", "all", "some", "none"})
_Op = Callable[..., Any]


class FlagDefinitionError(ValueError):
    """A flag definition that does not follow the flagd flag-definition format."""


class _TargetingError(Exception):
    """A targeting rule that cannot be evaluated for this context."""


# ReferenceError: json_logic's unknown operator; the rest: bad operands deep in an operator.
_EVAL_ERRORS = (
    _TargetingError,
    ReferenceError,
    ArithmeticError,
    TypeError,
    ValueError,
    RecursionError,
)


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
    flag_key: str,
    definition: Mapping[str, Any] | None,
    tenant_id: str,
    now_s: int = 0,
    *,
    targeting_key: str | None = None,
) -> Resolution:
    """Resolve a flag for a tenant; callers apply their own default when value is None.

    The targeting key (what `fractional` buckets on) is the tenant unless one is given, such
    as a request key to spread one tenant's requests over a rollout.
    """
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
    context = {
        "tenantId": tenant_id,
        "targetingKey": tenant_id if targeting_key is None else targeting_key,
        "$flagd": {"flagKey": flag_key, "timestamp": now_s},
    }
    try:
        name = _variant_name(jsonLogic(targeting, context, _OPS))
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
    """Reject targeting that names an operator the evaluator does not know."""
    if isinstance(rule, list):
        for item in rule:
            _check_operators(item)
    elif isinstance(rule, Mapping) and len(rule) == 1:
        name, args = next(iter(rule.items()))
        if name not in _CONTROL and name not in _OPS:
            raise FlagDefinitionError(f"targeting uses unknown operator {name!r}")
        if name == "fractional":
            args = args if isinstance(args, list) else [args]
            _check_fractional(args[1:] if args and not isinstance(args[0], list) else args)
        _check_operators(args)


def _check_fractional(distributions: list[Any]) -> None:
    """Refuse weights that are not integers >= 0, or that sum to zero or above 2**31 - 1."""
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
    if isinstance(result, bool):  # json_logic's to_string gives "True" for true
        return "true" if result else "false"
    return str(to_string(result))


def _weighted(item: Any) -> tuple[Any, int]:
    if not isinstance(item, list) or not item or len(item) > 2:
        raise _TargetingError("fractional distributions must be [variant, weight] arrays")
    weight = item[1] if len(item) > 1 and item[1] is not None else 1
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise _TargetingError("fractional weight must be a number")
    if weight < 0 or (isinstance(weight, float) and not weight.is_integer()):
        raise _TargetingError("fractional weight must be a non-negative integer")
    return item[0], int(weight)


# --- where the port is stricter than the library (see the decision record) --------------


def _checked_fractional(data: Any, *args: Any) -> Any:
    """flagd's fractional, after refusing the weights it would clamp or quietly skip."""
    if not args:
        raise _TargetingError("fractional needs distributions")
    bucket_by = args[:1] if isinstance(args[0], str) else ()
    weighted = [_weighted(item) for item in args[len(bucket_by) :]]
    if sum(weight for _, weight in weighted) > _MAX_WEIGHT_SUM:
        raise _TargetingError("fractional weights sum above 2**31 - 1")
    return fractional(data, *bucket_by, *([variant, weight] for variant, weight in weighted))


def _quiet_sem_ver(data: Any, *args: Any) -> Any:
    """flagd's sem_ver, false without the traceback it logs for a value that is no version."""
    try:
        for version in args[0:3:2]:
            normalize_version(version)
    except ValueError:
        return False
    return sem_ver(data, *args)


def _strict_eq(_data: Any, left: Any = None, right: Any = None, *_: Any) -> bool:
    """JavaScript ===: true is not 1 (Python's == says it is)."""
    return _kind(left) == _kind(right) and bool(left == right)


def _loose_eq(data: Any, left: Any = None, right: Any = None, *_: Any) -> bool:
    """JavaScript ==: null equals only null (the library coerces it to 0)."""
    if left is None or right is None:
        return left is None and right is None
    return bool(OPERATORS["=="](data, left, right))


def _ordered(op: _Op) -> _Op:
    """No ordering holds with a missing value (the library coerces null to 0)."""

    def apply(data: Any, *args: Any) -> bool:
        return all(arg is not None for arg in args[:3]) and bool(op(data, *args))

    return apply


def _numeric(op: _Op) -> _Op:
    """Arithmetic on something that is not a number is an error, not NaN."""

    def apply(data: Any, *args: Any) -> Any:
        result = op(data, *args)
        if isinstance(result, float) and math.isnan(result):
            raise _TargetingError("arithmetic on a value that is not a number")
        return result

    return apply


_OPS: dict[str, _Op] = {
    **{name: op for name, op in OPERATORS.items() if name != "log"},  # log writes to stdout
    "===": _strict_eq,
    "!==": lambda data, *args: not _strict_eq(data, *args),
    "==": _loose_eq,
    "!=": lambda data, *args: not _loose_eq(data, *args),
    **{name: _ordered(OPERATORS[name]) for name in ("<", "<=", ">", ">=")},
    **{name: _numeric(OPERATORS[name]) for name in ("+", "-", "*", "/", "%", "min", "max")},
    "fractional": _checked_fractional,
    "sem_ver": _quiet_sem_ver,
}
