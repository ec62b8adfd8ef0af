"""Unit tests for the flagd flag-definition evaluator."""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest
from openfeature.contrib.tools.flagd.core import FlagdCore
from openfeature.evaluation_context import EvaluationContext

from lapverse_streams.domain.champions import champion_flag, champion_flag_key
from lapverse_streams.domain.flags import (
    FlagDefinitionError,
    Resolution,
    evaluate,
    is_enabled,
    validate_flag,
)

BOOL_VARIANTS = {"on": True, "off": False}


def bool_flag(targeting: Any = None, default: str = "on", **extra: Any) -> dict[str, Any]:
    """A boolean flag definition with optional targeting."""
    flag: dict[str, Any] = {"variants": dict(BOOL_VARIANTS), "defaultVariant": default, **extra}
    if targeting is not None:
        flag["targeting"] = targeting
    return flag


def holds(rule: Any, tenant: str = "acme", now_s: int = 0) -> bool:
    """Whether a JsonLogic condition is truthy for a tenant, via an if/else targeting rule."""
    flag = bool_flag({"if": [rule, "on", "off"]})
    resolution = evaluate("probe", flag, tenant, now_s)
    assert resolution.reason == "TARGETING_MATCH", resolution
    return resolution.value is True


def rollout(on_weight: int, off_weight: int, *bucket_by: Any) -> dict[str, Any]:
    """A boolean flag rolled out with fractional, optionally with a bucketing expression."""
    return bool_flag({"fractional": [*bucket_by, ["on", on_weight], ["off", off_weight]]}, "off")


TENANTS = [f"tenant-{n:04d}" for n in range(2000)]


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("definition", "field"),
    [
        ([], "JSON object"),
        ("on", "JSON object"),
        (None, "JSON object"),
        ({"defaultVariant": "on"}, "variants"),
        ({"variants": {}, "defaultVariant": "on"}, "variants"),
        ({"variants": ["on"], "defaultVariant": "on"}, "variants"),
        ({"variants": {"on": True, "x": None}, "defaultVariant": "on"}, r"variants\.x"),
        ({"variants": {"on": True, "x": [1]}, "defaultVariant": "on"}, r"variants\.x"),
        ({"variants": {"on": True, "x": "yes"}, "defaultVariant": "on"}, "one type"),
        ({"variants": BOOL_VARIANTS}, "defaultVariant"),
        ({"variants": BOOL_VARIANTS, "defaultVariant": 1}, "defaultVariant"),
        (bool_flag(state="ON"), "state"),
        (bool_flag(state=["ENABLED"]), "state"),
        (bool_flag(targeting=["on"]), "targeting"),
        (bool_flag(targeting="on"), "targeting"),
        (bool_flag(targeting={"bogus_op": [1]}), "targeting uses unknown operator 'bogus_op'"),
        (bool_flag(targeting={"if": [{"nope": []}, "on", "off"]}), "'nope'"),
        (bool_flag(metadata="team"), "metadata"),
        (bool_flag(owner="me"), "unknown field 'owner'"),
    ],
)
def test_validate_rejects_with_field_name(definition: object, field: str) -> None:
    with pytest.raises(FlagDefinitionError, match=field):
        validate_flag(definition)


def test_validate_names_missing_default_variant() -> None:
    with pytest.raises(FlagDefinitionError) as caught:
        validate_flag({"variants": BOOL_VARIANTS, "defaultVariant": "x"})
    assert str(caught.value) == "defaultVariant 'x' is not one of the variants"
    assert isinstance(caught.value, ValueError)


def test_validate_normalizes_state_and_keeps_optional_fields() -> None:
    targeting = {"in": [{"var": "tenantId"}, ["acme"]]}
    flag = validate_flag(bool_flag(targeting, metadata={"owner": "data-team"}))
    assert flag == {
        "state": "ENABLED",
        "variants": BOOL_VARIANTS,
        "defaultVariant": "on",
        "targeting": targeting,
        "metadata": {"owner": "data-team"},
    }
    assert validate_flag(bool_flag(state="DISABLED"))["state"] == "DISABLED"


@pytest.mark.parametrize(
    "variants",
    [
        {"a": "alpha", "b": "beta"},
        {"small": 1, "big": 2.5},
        {"v1": {"model": "naive"}, "v2": {"model": "ets", "alpha": 0.3}},
    ],
)
def test_validate_accepts_string_number_and_object_variants(variants: dict[str, Any]) -> None:
    default = next(iter(variants))
    assert validate_flag({"variants": variants, "defaultVariant": default})["variants"] == variants


@pytest.mark.parametrize(
    "distributions",
    [
        [["on", -10], ["off", 110]],
        [["on", 12.5], ["off", 87.5]],
        [["on", float("inf")], ["off", 1]],
        [["on", float("nan")], ["off", 1]],
        [["on", "10"], ["off", 90]],
        [["on", True], ["off", 1]],
        [["on", 0], ["off", 0]],
        [["on", 2**31], ["off", 1]],
        [{"var": "tenantId"}, ["on", 0], ["off", 0]],
        [["on", 50], "off"],
    ],
)
def test_validate_refuses_bad_fractional_weights(distributions: list[Any]) -> None:
    with pytest.raises(FlagDefinitionError, match="fractional"):
        validate_flag(bool_flag({"fractional": distributions}, "off"))
    nested = bool_flag({"if": [True, {"fractional": distributions}, "off"]}, "off")
    with pytest.raises(FlagDefinitionError, match="fractional"):
        validate_flag(nested)


def test_validate_accepts_integral_fractional_weights() -> None:
    for flag in (rollout(10, 90), rollout(100, 0), rollout(50, 50, {"var": "tenantId"})):
        assert validate_flag(flag)["targeting"] == flag["targeting"]
    assert validate_flag(bool_flag({"fractional": [["on"], ["off", 3.0]]}, "off"))


# --- static resolution and the boolean gate ---------------------------------------------


def test_static_on_and_off() -> None:
    assert evaluate("f", bool_flag(), "acme") == Resolution(True, "on", "STATIC")
    assert evaluate("f", bool_flag(default="off"), "acme") == Resolution(False, "off", "STATIC")
    assert evaluate("f", bool_flag({}), "acme").reason == "STATIC"


def test_static_object_variant_value() -> None:
    flag = {"variants": {"v1": {"alpha": 0.3}}, "defaultVariant": "v1"}
    assert evaluate("f", flag, "acme") == Resolution({"alpha": 0.3}, "v1", "STATIC")


def test_undefined_and_disabled_flags_leave_the_default_to_the_caller() -> None:
    assert evaluate("f", None, "acme") == Resolution(None, None, "DEFAULT")
    disabled = bool_flag(default="off", state="DISABLED")
    assert evaluate("f", disabled, "acme") == Resolution(None, None, "DISABLED")
    assert is_enabled("task-type.CHAOS", None, "acme")
    assert is_enabled("task-type.CHAOS", disabled, "acme")


def test_is_enabled_follows_the_resolved_value() -> None:
    assert is_enabled("family.forecast", bool_flag(default="on"), "acme")
    assert not is_enabled("family.forecast", bool_flag(default="off"), "acme")
    only_acme = bool_flag({"if": [{"==": [{"var": "tenantId"}, "acme"]}, "on", "off"]})
    assert is_enabled("family.forecast", only_acme, "acme")
    assert not is_enabled("family.forecast", only_acme, "globex")


def test_malformed_stored_definition_is_an_error_and_gates_closed() -> None:
    broken = {"variants": BOOL_VARIANTS, "defaultVariant": "x"}
    assert evaluate("f", broken, "acme") == Resolution(None, None, "ERROR")
    assert not is_enabled("f", broken, "acme")


def test_resolution_is_frozen() -> None:
    resolution = evaluate("f", bool_flag(), "acme")
    with pytest.raises(dataclasses.FrozenInstanceError):
        resolution.reason = "ERROR"  # type: ignore[misc]


# --- targeting ---------------------------------------------------------------------------


def test_targeting_by_tenant_with_in() -> None:
    flag = bool_flag({"if": [{"in": [{"var": "tenantId"}, ["acme", "globex"]]}, "on", "off"]})
    assert evaluate("f", flag, "acme") == Resolution(True, "on", "TARGETING_MATCH")
    assert evaluate("f", flag, "globex").value is True
    assert evaluate("f", flag, "initech") == Resolution(False, "off", "TARGETING_MATCH")


def test_targeting_by_tenant_with_equality_on_targeting_key() -> None:
    flag = bool_flag({"if": [{"==": [{"var": "targetingKey"}, "acme"]}, "on", "off"]}, "on")
    assert evaluate("f", flag, "acme").variant == "on"
    assert evaluate("f", flag, "globex").variant == "off"


def test_if_else_chain_picks_string_variants() -> None:
    flag = {
        "variants": {"gold": "gpt-large", "silver": "gpt-small", "bronze": "naive"},
        "defaultVariant": "bronze",
        "targeting": {
            "if": [
                {"in": [{"var": "tenantId"}, ["acme"]]},
                "gold",
                {"starts_with": [{"var": "tenantId"}, "eu-"]},
                "silver",
                "bronze",
            ]
        },
    }
    assert evaluate("model", flag, "acme") == Resolution("gpt-large", "gold", "TARGETING_MATCH")
    assert evaluate("model", flag, "eu-globex").value == "gpt-small"
    assert evaluate("model", flag, "initech").value == "naive"


def test_nested_if_else() -> None:
    flag = bool_flag(
        {"if": [{"==": [{"var": "tenantId"}, "a"]}, "on", {"if": [False, "on", "off"]}]}
    )
    assert evaluate("f", flag, "a").value is True
    assert evaluate("f", flag, "b").value is False


@pytest.mark.parametrize(
    "targeting",
    [
        {"if": [{"==": [{"var": "tenantId"}, "nobody"]}, "on"]},
        {"var": "no.such.path"},
        {"cat": ["no-", "such-variant"]},
        {"if": [True, ["on"], "off"]},
    ],
)
def test_targeting_without_a_variant_uses_the_default(targeting: Any) -> None:
    flag = bool_flag(targeting, default="off")
    assert evaluate("f", flag, "acme") == Resolution(False, "off", "DEFAULT")


def test_boolean_targeting_result_names_true_false_variants() -> None:
    flag = {
        "variants": {"true": "fast", "false": "slow"},
        "defaultVariant": "false",
        "targeting": {"starts_with": [{"var": "tenantId"}, "vip-"]},
    }
    assert evaluate("f", flag, "vip-acme") == Resolution("fast", "true", "TARGETING_MATCH")
    assert evaluate("f", flag, "acme") == Resolution("slow", "false", "TARGETING_MATCH")


@pytest.mark.parametrize(
    "broken",
    [
        {"/": [1, 0]},
        {"%": [1, 0]},
        {"+": [1, "one"]},
        {"no_such_operator": [1]},
        {"if": [{"nope": []}, "on", "off"]},
        {"fractional": [["on", -1], ["off", 1]]},
        {"fractional": [["on", 1.5], ["off", 1]]},
        {"fractional": [["on", "ten"], ["off", 1]]},
        {"fractional": ["on", "off"]},
        {"fractional": [["on", 2**31], ["off", 1]]},
    ],
)
def test_broken_targeting_falls_back_to_default_with_error(broken: Any) -> None:
    flag = bool_flag(broken, default="off")
    assert evaluate("f", flag, "acme") == Resolution(False, "off", "ERROR")
    assert not is_enabled("f", flag, "acme")


def test_context_carries_flag_key_and_timestamp() -> None:
    assert holds({"==": [{"var": "$flagd.flagKey"}, "probe"]})
    assert holds({">=": [{"var": "$flagd.timestamp"}, 1_700_000_000]}, now_s=1_700_000_001)
    assert not holds({">=": [{"var": "$flagd.timestamp"}, 1_700_000_000]})


# --- JsonLogic operators -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"==": [{"var": ["no.such", "fallback"]}, "fallback"]}, True),
        ({"==": [{"var": "tenantId"}, "acme"]}, True),
        ({"==": [1, "1"]}, True),
        ({"===": [1, "1"]}, False),
        ({"===": [1, 1.0]}, True),
        ({"===": [True, 1]}, False),
        ({"!=": ["a", "b"]}, True),
        ({"!==": [1, "1"]}, True),
        ({"==": [None, None]}, True),
        ({"==": [None, 0]}, False),
        ({"!": [[]]}, True),
        ({"!": {"var": "tenantId"}}, False),
        ({"!!": ["0"]}, True),
        ({"!!": [0]}, False),
        ({"and": [True, {"var": "tenantId"}]}, True),
        ({"and": [True, ""]}, False),
        ({"or": [False, 0, "x"]}, True),
        ({"or": [False, []]}, False),
        ({"<": [1, 2]}, True),
        ({"<": [2, 2]}, False),
        ({"<=": [2, 2]}, True),
        ({">": [3, "2"]}, True),
        ({">=": [1, 2]}, False),
        ({"<": ["apple", "banana"]}, True),
        ({"<": [1, 5, 10]}, True),
        ({"<": [1, 10, 10]}, False),
        ({"<=": [1, 10, 10]}, True),
        ({"<": [None, 1]}, False),
        ({"in": ["cm", {"var": "tenantId"}]}, True),
        ({"in": ["zz", "acme"]}, False),
        ({"in": ["b", ["a", "b"]]}, True),
        ({"in": [1, ["1"]]}, False),
        ({"==": [{"cat": ["tenant:", {"var": "tenantId"}, ":", 1.0]}, "tenant:acme:1"]}, True),
        ({"==": [{"+": [1, 2, "3"]}, 6]}, True),
        ({"==": [{"-": [10, 4]}, 6]}, True),
        ({"==": [{"-": [4]}, -4]}, True),
        ({"==": [{"*": [2, 3, 4]}, 24]}, True),
        ({"==": [{"/": [9, 2]}, 4.5]}, True),
        ({"==": [{"cat": [{"/": [4, 2]}]}, "2"]}, True),
        ({"==": [{"%": [10, 3]}, 1]}, True),
        ({"in": ["zone", {"missing": ["zone", "tenantId"]}]}, True),
        ({"!": {"missing": ["tenantId", "$flagd.flagKey"]}}, True),
        ({"starts_with": [{"var": "tenantId"}, "ac"]}, True),
        ({"starts_with": [{"var": "tenantId"}, "me"]}, False),
        ({"ends_with": [{"var": "tenantId"}, "me"]}, True),
        ({"ends_with": [{"var": "tenantId"}, 3]}, False),
        ({"if": [False, False, None, False, True]}, True),
    ],
)
def test_jsonlogic_operators(rule: Any, expected: bool) -> None:
    assert holds(rule) is expected


@pytest.mark.parametrize(
    ("version", "op", "target", "expected"),
    [
        ("2.0.0", "=", "2.0.0", True),
        ("v2.0.0", "=", "2.0.0", True),
        ("2.0.1", "=", "2.0.0", False),
        ("1.2.3", "!=", "1.2.4", True),
        ("2.1.0", ">", "2.0.9", True),
        ("1.10.0", ">", "1.9.0", True),
        ("1.9.9", "<", "2.0.0", True),
        ("2.0.0", "<=", "2.0.0", True),
        ("2.0.0", ">=", "2.0.1", False),
        ("1.0.0-alpha", "<", "1.0.0", True),
        ("1.0.0-alpha.1", "<", "1.0.0-alpha.beta", True),
        ("1.0.0-beta.2", "<", "1.0.0-beta.11", True),
        ("1.0.0+build.7", "=", "1.0.0", True),
        ("3.1.9", "~", "3.1.0", True),
        ("3.2.0", "~", "3.1.0", False),
        ("3.9.0", "^", "3.0.0", True),
        ("4.0.0", "^", "3.0.0", False),
        ("1.4.2", "^", "1", True),
        ("2.0.0.0", "=", "2.0.0", False),
        ("not-a-version", ">=", "1.0.0", False),
        ("1.0.0", "=>", "1.0.0", False),
    ],
)
def test_sem_ver(version: str, op: str, target: str, expected: bool) -> None:
    assert holds({"sem_ver": [version, op, target]}) is expected


def test_sem_ver_against_the_tenant_id() -> None:
    rule = {"sem_ver": [{"var": "tenantId"}, ">=", "1.2.0"]}
    assert holds(rule, tenant="1.2.0")
    assert not holds(rule, tenant="1.1.9")
    assert not holds(rule, tenant="acme")


def test_starts_with_gates_a_tenant_family() -> None:
    flag = bool_flag({"if": [{"starts_with": [{"var": "tenantId"}, "beta-"]}, "on", "off"]})
    assert is_enabled("task-type.CHAOS", flag, "beta-acme")
    assert not is_enabled("task-type.CHAOS", flag, "acme-beta-")


# --- fractional rollouts -----------------------------------------------------------------


def test_fractional_10_90_splits_about_ten_percent_and_is_sticky() -> None:
    flag = rollout(10, 90)
    first = {t: evaluate("task-type.CHAOS", flag, t).variant for t in TENANTS}
    share_on = sum(variant == "on" for variant in first.values()) / len(TENANTS)
    assert 0.07 <= share_on <= 0.13
    assert all(v in ("on", "off") for v in first.values())
    again = {t: evaluate("task-type.CHAOS", flag, t, now_s=12345).variant for t in TENANTS}
    assert again == first
    assert all(evaluate("task-type.CHAOS", flag, t).reason == "TARGETING_MATCH" for t in TENANTS)


def test_fractional_shorthand_is_seeded_by_flag_key() -> None:
    flag = rollout(50, 50)
    a = [evaluate("flag-a", flag, t).variant for t in TENANTS]
    b = [evaluate("flag-b", flag, t).variant for t in TENANTS]
    assert a != b


def test_fractional_bucketing_expression_ignores_flag_key() -> None:
    by_tenant = rollout(50, 50, {"var": "tenantId"})
    a = [evaluate("flag-a", by_tenant, t).variant for t in TENANTS]
    b = [evaluate("flag-b", by_tenant, t).variant for t in TENANTS]
    assert a == b
    assert 0.4 <= a.count("on") / len(a) <= 0.6
    shared = rollout(50, 50, {"cat": ["shared-seed", {"var": "tenantId"}]})
    assert [evaluate("x", shared, t).variant for t in TENANTS] != a


def test_fractional_edge_weights() -> None:
    assert all(evaluate("f", rollout(100, 0), t).value is True for t in TENANTS[:200])
    assert all(evaluate("f", rollout(0, 100), t).value is False for t in TENANTS[:200])
    assert evaluate("f", rollout(0, 0), "acme") == Resolution(False, "off", "DEFAULT")
    single = bool_flag({"fractional": [["on"]]}, "off")
    assert evaluate("f", single, "acme") == Resolution(True, "on", "TARGETING_MATCH")


def test_fractional_inside_a_condition() -> None:
    flag = bool_flag({"if": [{"fractional": [[False, 0], [True, 100]]}, "on", "off"]}, "off")
    assert evaluate("f", flag, "acme").value is True


# Vectors from open-feature/flagd-testbed (evaluator/gherkin/fractional.feature, the
# @fractional-v2 examples, flags/custom-ops.json), which flagd's current
# (hash * totalWeight) >> 32 bucketing passes. Those flags bucket on user.name; here the
# same bucketing key is built from tenantId.
SUITS = [["clubs", 25], ["diamonds", 25], ["hearts", 25], ["spades", 25]]


def suits_flag(*bucket_by: Any) -> dict[str, Any]:
    variants = {s: s for s in ("clubs", "diamonds", "hearts", "spades", "wild")}
    targeting = {"fractional": [*bucket_by, *SUITS]}
    return {"variants": variants, "defaultVariant": "wild", "targeting": targeting}


@pytest.mark.parametrize(
    ("name", "suit"),
    [
        ("jack", "hearts"),
        ("queen", "spades"),
        ("ten", "clubs"),
        ("nine", "diamonds"),
        ("3", "clubs"),
    ],
)
def test_flagd_testbed_vector_flag_key_seed(name: str, suit: str) -> None:
    flag = suits_flag({"cat": [{"var": "$flagd.flagKey"}, {"var": "tenantId"}]})
    assert evaluate("fractional-flag", flag, name).variant == suit


@pytest.mark.parametrize(
    ("name", "suit"),
    [("seven", "hearts"), ("eight", "diamonds"), ("nine", "clubs"), ("two", "spades")],
)
def test_flagd_testbed_vector_shared_seed(name: str, suit: str) -> None:
    flag = suits_flag({"cat": ["shared-seed", {"var": "tenantId"}]})
    assert evaluate("fractional-flag-A-shared-seed", flag, name).variant == suit


@pytest.mark.parametrize(
    ("tenant", "side"), [("jon@company.com", "heads"), ("jane@company.com", "tails")]
)
def test_flagd_testbed_vector_shorthand(tenant: str, side: str) -> None:
    flag = {
        "variants": {"heads": "heads", "tails": "tails", "draw": "draw"},
        "defaultVariant": "draw",
        "targeting": {"fractional": [["heads"], ["tails", 1]]},
    }
    assert evaluate("fractional-flag-shorthand", flag, tenant).variant == side


@pytest.mark.parametrize(
    ("tenant", "half"),
    [
        ("ejOoVL", "lower"),
        ("bY9fO-", "lower"),
        ("SI7p-", "lower"),
        ("6LvT0", "upper"),
        ("ceQdGm", "upper"),
    ],
)
def test_flagd_testbed_vector_hash_edges(tenant: str, half: str) -> None:
    flag = {
        "variants": {"lower": "lower", "upper": "upper"},
        "defaultVariant": "lower",
        "targeting": {"fractional": [{"var": "targetingKey"}, ["lower", 50], ["upper", 50]]},
    }
    assert evaluate("fractional-hash-edge-flag", flag, tenant) == Resolution(
        half, half, "TARGETING_MATCH"
    )


# --- request keys, the platform's champion flags, and the official resolver --------------

REQUEST_KEYS = [f"request-{n}" for n in range(2000)]


def test_targeting_key_spreads_one_tenants_requests_over_a_rollout() -> None:
    flag = bool_flag(
        {"if": [{"==": [{"var": "tenantId"}, "acme"]}, {"fractional": [["on", 10], ["off", 90]]}]},
        "off",
    )
    first = [evaluate("f", flag, "acme", targeting_key=k).variant for k in REQUEST_KEYS]
    assert 0.07 <= first.count("on") / len(first) <= 0.13
    assert [evaluate("f", flag, "acme", 99, targeting_key=k).variant for k in REQUEST_KEYS] == first
    assert {evaluate("f", flag, "globex", targeting_key=k).variant for k in REQUEST_KEYS} == {"off"}
    assert evaluate("f", rollout(10, 90), "acme", targeting_key="acme") == evaluate(
        "f", rollout(10, 90), "acme"
    )


def test_champion_flags_roll_out_to_ten_percent_then_to_everyone() -> None:
    key = champion_flag_key("acme", "forecast")
    flag = validate_flag(champion_flag("conservative", "balanced"))
    served = [evaluate(key, flag, "acme", targeting_key=k).value for k in REQUEST_KEYS]
    assert set(served) == {"conservative", "balanced"}
    assert 0.08 <= served.count("conservative") / len(served) <= 0.12
    merged = validate_flag(champion_flag("conservative", "balanced", 100))
    assert {evaluate(key, merged, "acme", targeting_key=k).value for k in REQUEST_KEYS} == {
        "conservative"
    }


@pytest.mark.parametrize(
    "definition",
    [
        champion_flag("conservative", "balanced"),
        champion_flag("conservative", ""),
        champion_flag("conservative", "balanced", 100),
        suits_flag({"cat": ["shared-seed", {"var": "tenantId"}]}),
        rollout(50, 50, {"var": "targetingKey"}),
    ],
)
def test_agrees_with_the_official_flagd_resolver(definition: dict[str, Any]) -> None:
    core = FlagdCore()
    core.set_flags({"flags": {"flag": copy.deepcopy(validate_flag(definition))}})  # state set
    for k in REQUEST_KEYS[:500]:
        context = EvaluationContext(k, {"tenantId": "acme"})
        ours = evaluate("flag", definition, "acme", targeting_key=k)
        if isinstance(ours.value, bool):
            official: Any = core.resolve_boolean_value("flag", False, context)
        else:
            official = core.resolve_string_value("flag", "", context)
        assert (ours.value, ours.variant, ours.reason) == (
            official.value,
            official.variant,
            official.reason,
        )


def test_validate_refuses_the_log_operator() -> None:
    with pytest.raises(FlagDefinitionError, match="'log'"):
        validate_flag(bool_flag({"log": ["on"]}))
