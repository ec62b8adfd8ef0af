"""Champion commands in the governor: one owner of the flag, in order, fenced by sequence."""

from __future__ import annotations

import random
from typing import Any

import orjson

from lapverse_streams.domain import champions
from lapverse_streams.domain.batch import Inbound
from lapverse_streams.domain.governor import Governor
from lapverse_streams.domain.rollout import RolloutPolicy
from lapverse_streams.events.champion_models import ChampionCommand
from tests.unit.test_governor_rounds import NOW, Log, admit_round, gov, sinks

__all__ = ["gov"]  # the fixture


def promote(gov: Governor, log: Log, winner: str = "experimental", rounds: int = 60) -> None:
    """Rounds that `winner` mostly wins, until it is promoted."""
    rng = random.Random(3)
    gov.rollout = RolloutPolicy(step_rounds=0, step_after_ms=0)  # steps only by command here
    for i in range(rounds):
        round_id = admit_round(gov, log, f"{winner}-{i}")
        out = gov.process([log.joined(round_id, winner if rng.random() < 0.8 else "balanced")])
        if sinks(out.records, "champions"):
            return
    raise AssertionError("no promotion")


def command(log: Log, action: str, **fields: Any) -> Inbound:
    data = ChampionCommand(
        command_id=f"cmd-{action}-{log.offsets.get('commands', 0)}",
        tenant="acme",
        family="forecast",
        action=action,  # type: ignore[arg-type]
        actor=fields.pop("actor", "ops@example.com"),
        reason=fields.pop("reason", "because"),
        requested_at_ms=NOW,
        **fields,
    )
    _key, value = champions.command_record(data, "/t")
    return log.raw("commands", value)


def changes(out: Any) -> list[tuple[str, str, int, str]]:
    return [
        (
            e["type"].split(".")[3],
            e["data"]["champion"],
            e["data"]["rolloutPercent"],
            e["data"]["state"],
        )
        for e in sinks(out.records, "champions")
    ]


def test_pin_unpin_and_rollback_emit_events_with_who_and_why(gov: Governor) -> None:
    log = Log()
    promote(gov, log)
    out = gov.process([command(log, "pin", variant="conservative", reason="incident 7")])
    assert changes(out) == [("pinned", "conservative", 100, "pinned")]
    (event,) = sinks(out.records, "champions")
    assert (event["data"]["actor"], event["data"]["reason"], event["data"]["previous"]) == (
        "ops@example.com",
        "incident 7",
        "experimental",
    )
    (flag,) = sinks(out.records, "flags")
    assert flag["data"]["definition"]["defaultVariant"] == "conservative"

    for i in range(40):  # experimental keeps winning, but the pin holds promotion
        round_id = admit_round(gov, log, f"pinned-{i}")
        held = gov.process([log.joined(round_id, "experimental")])
        assert sinks(held.records, "champions") == []
    assert gov.evolutions["acme/forecast"]["incumbent"] == "conservative"

    out = gov.process([command(log, "rollback", reason="pin was wrong")])
    assert changes(out) == [("rolled-back", "experimental", 100, "rolled-back")]
    assert gov.process([command(log, "unpin")]).records == []  # nothing pinned any more


def test_stale_ticks_and_a_replayed_old_merge_change_nothing(gov: Governor) -> None:
    log = Log()
    promote(gov, log)
    stored = gov.evolutions["acme/forecast"]["rollout"]
    sequence = stored["sequence"]
    assert gov.process([command(log, "tick", sequence=sequence - 1)]).records == []
    old_merge = command(log, "merge", variant="experimental", sequence=sequence - 1, actor="kaggle")
    assert gov.process([old_merge]).records == []
    assert gov.evolutions["acme/forecast"]["rollout"] == stored

    merge = command(log, "merge", variant="experimental", sequence=sequence, actor="kaggle")
    out = gov.process([merge])
    assert changes(out) == [("stepped", "experimental", 100, "full")]
    after = gov.evolutions["acme/forecast"]["rollout"]
    replayed = Inbound("commands", 0, log.offsets["commands"], b"acme", merge.value, [])
    assert gov.process([replayed]).records == []  # a second copy at a later offset: stale
    assert gov.evolutions["acme/forecast"]["rollout"] == after


def test_a_redelivered_command_sends_its_outputs_again_and_changes_nothing(gov: Governor) -> None:
    log = Log()
    promote(gov, log)
    pin = command(log, "pin", variant="balanced")
    first = gov.process([pin])
    stored = gov.evolutions["acme/forecast"]
    again = gov.process([pin])
    assert [r.sink for r in again.records] == ["champions", "flags"]
    assert [orjson.loads(r.value or b"")["id"] for r in again.records] == [
        orjson.loads(r.value or b"")["id"] for r in first.records
    ]
    assert gov.evolutions["acme/forecast"] == stored


def test_bad_commands_are_dead_lettered_and_leave_no_write(gov: Governor) -> None:
    log = Log()
    promote(gov, log)
    stored = dict(gov.evolutions)
    good = orjson.loads(command(log, "pin", variant="balanced").value or b"")
    unknown = {**good, "subject": "nobody", "data": {**good["data"], "tenant": "nobody"}}
    no_variant = {**good, "data": {k: v for k, v in good["data"].items() if k != "variant"}}
    bad_name = {**good, "data": {**good["data"], "variant": "../etc"}}
    records = [
        log.raw("commands", b"not json"),
        log.raw("commands", orjson.dumps(bad_name)),
        log.raw("commands", orjson.dumps(no_variant)),
        Inbound("commands", 0, 99, b"nobody", orjson.dumps(unknown), []),
        Inbound("commands", 0, 100, b"globex", orjson.dumps(good), []),  # another tenant's key
        log.raw("commands", orjson.dumps({**good, "type": "io.lapverse.task.requested.v1"})),
    ]
    out = gov.process(records)
    reasons = [dict(r.headers)["lapverse-dlq-reason"] for r in out.records]
    assert reasons == [
        b"not_json",
        b"wrong_schema",
        b"wrong_schema",
        b"unknown_tenant",
        b"key_mismatch",
        b"unknown_type",
    ]
    assert {r.sink for r in out.records} == {"dlq"}
    assert gov.evolutions == stored
