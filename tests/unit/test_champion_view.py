"""The gateway's champion view: current state by sequence, history on disk, bounded memory."""

from __future__ import annotations

from pathlib import Path

from lapverse_streams.events.champion_models import ChampionChanged, ChampionPromoted
from lapverse_streams.events.models import FinOpsTags
from lapverse_streams.gateway.champion_view import ChampionView
from lapverse_streams.gateway.view import Store

TAGS = FinOpsTags(environment="t", tenant_id="acme", cost_center="c", owner="o", version="1")


def promoted(tenant: str, family: str, sequence: int = 1) -> ChampionPromoted:
    return ChampionPromoted(
        tenant=tenant,
        family=family,
        champion="conservative",
        baseline="balanced",
        sequence=sequence,
        competition_id="c-1",
        evidence={"sample": {"min_rounds": 30}},  # an old event: snake_case, decoded camelCase
        flag_key=f"champion.{tenant}.{family}",
        rollout_percent=10,
        tags=TAGS.model_copy(update={"tenant_id": tenant}),
        promoted_at_ms=1_790_000_000_000,
    )


def changed(sequence: int, champion: str, state: str, percent: int) -> ChampionChanged:
    return ChampionChanged(
        tenant="acme",
        family="forecast",
        champion=champion,
        previous="conservative",
        sequence=sequence,
        promotion_sequence=1,
        state=state,  # type: ignore[arg-type]
        rollout_percent=percent,
        reason="why",
        cause="operator",
        actor="ops",
        command_id=f"cmd-{sequence}",
        flag_key="champion.acme.forecast",
        tags=TAGS,
        changed_at_ms=1_790_000_000_000 + sequence,
    )


def test_the_latest_sequence_wins_and_history_pages_newest_first(tmp_path: Path) -> None:
    store = Store(tmp_path / "view.sqlite")
    view = ChampionView(store, max_entries=10)
    view.apply("champion.promoted", promoted("acme", "forecast"))
    view.apply("champion.stepped", changed(2, "conservative", "ramping", 50))
    view.apply("champion.pinned", changed(3, "balanced", "pinned", 100))
    view.apply("champion.stepped", changed(2, "conservative", "ramping", 50))  # a copy
    current = view.current("acme", "forecast")
    assert current is not None
    assert (current["champion"], current["state"], current["sequence"]) == ("balanced", "pinned", 3)
    assert current["promotion"] is None  # the champion changed hands by a pin
    assert [e["sequence"] for e in view.history("acme", "forecast", None, 2)] == [3, 2]
    assert [e["sequence"] for e in view.history("acme", "forecast", 2, 2)] == [1]
    first = view.history("acme", "forecast", 2, 2)[0]
    assert first["evidence"] == {"sample": {"minRounds": 30}}
    store.close()


def test_memory_is_bounded_and_listing_reads_every_family_from_disk(tmp_path: Path) -> None:
    store = Store(tmp_path / "view.sqlite")
    view = ChampionView(store, max_entries=2)
    for n in range(5):
        view.apply("champion.promoted", promoted("acme", f"family-{n}"))
    view.apply("champion.promoted", promoted("acme-2", "forecast"))  # a tenant sharing a prefix
    assert len(view) == 2
    assert [e["family"] for e in view.families("acme")] == [f"family-{n}" for n in range(5)]
    assert view.current("acme", "family-0") is not None  # evicted, read back from disk
    assert view.families("acme-2")[0]["family"] == "forecast"
    assert view.current("globex", "forecast") is None
    store.close()
