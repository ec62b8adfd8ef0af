"""Tournament agents: variant runners, and the join of their results keyed by competition id."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import faust

from lapverse_streams.clients.share_api import ShareAPI
from lapverse_streams.clock import now_ms
from lapverse_streams.domain.tournament import Round, VariantResult
from lapverse_streams.events.codec import (
    PoisonMessage,
    decode,
    encode,
    envelope,
    parse_data,
    trace_of,
)
from lapverse_streams.events.models import (
    CompetitionJoined,
    FinOpsTags,
    SharedPost,
    VariantResultEvent,
    VariantRun,
    VariantSummary,
)
from lapverse_streams.variants.base import FamilyInputError, VariantFamily

if TYPE_CHECKING:
    from agents.app import Worker

log = logging.getLogger(__name__)
SOURCE = "/lapverse/tournament"
SWEEP_INTERVAL_S = 1.0


def register_runner(
    worker: Worker,
    runs: faust.TopicT,
    results: faust.TopicT,
    families: dict[str, VariantFamily],
) -> None:
    """Attach the variant runner: one variant.result per variant.run, within its deadline."""
    settings = worker.settings

    async def run_one(run: VariantRun, traceparent: list[tuple[str, bytes]]) -> None:
        started = time.monotonic()
        status, score, output, error = "failed", None, None, None
        family = families.get(run.family)
        try:
            if family is None:
                raise FamilyInputError("family", f"family {run.family!r} is not installed")
            remaining_s = (run.deadline_ms - now_ms()) / 1000
            if remaining_s <= 0:
                raise TimeoutError
            normalized = family.validate_input(run.input)
            outcome = await asyncio.wait_for(family.run(run.variant, normalized), remaining_s)
            status, score, output = "ok", outcome.score, outcome.output
        except TimeoutError:
            status, error = "timeout", "deadline passed before the variant finished"
        except Exception as exc:  # a variant may fail in any way; the round goes on without it
            error = f"{type(exc).__name__}: {exc}"
            log.warning("variant failed", extra={"competitionId": run.competition_id})
        duration_ms = int((time.monotonic() - started) * 1000)
        result = VariantResultEvent(
            competition_id=run.competition_id,
            tenant=run.tenant,
            family=run.family,
            variant=run.variant,
            competitors=run.competitors,
            deadline_ms=run.deadline_ms,
            status=status,  # type: ignore[arg-type]
            score=score,
            cost_micros=run.cost_micros if status != "timeout" else 0,
            duration_ms=duration_ms,
            output=output,
            error=error,
            tags=run.tags,
            finished_at_ms=now_ms(),
        )
        event = envelope(
            "variant.result",
            f"{run.competition_id}:{run.variant}:result",
            run.tenant,
            result,
            now_ms(),
            SOURCE,
        )
        await results.send(
            key=run.competition_id.encode(), value=encode(event), headers=traceparent, force=True
        )
        worker.metrics.variant_runs.labels(run.family, run.variant, status).inc()
        if score is not None:
            worker.metrics.variant_score.labels(run.family, run.variant).observe(score)

    @worker.app.agent(runs, name="variant-runner")
    async def runner_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_ms / 1000):
            work = []
            for e in events:
                try:
                    event, short = decode(e.message.value)
                    if short != "variant.run":
                        raise PoisonMessage("unknown_type", f"{event.type} is not a variant.run")
                    run = parse_data(event, VariantRun)
                except PoisonMessage as exc:
                    log.error("undecodable variant run skipped", extra={"reason": exc.reason})
                    continue
                work.append(run_one(run, trace_of(e.message.headers)))
            await asyncio.gather(*work)


@dataclass
class Pending:
    """A round touched by a batch: its join record and what the round needs when it ends."""

    round: Round
    partition: int
    meta: dict[str, Any]  # tags, content, platforms and (once published) posts
    was_done: bool


def register_joiner(
    worker: Worker,
    inbound: faust.TopicT,
    joins: faust.TopicT,
    rounds: Any,
    runs_topic: str,
    share: ShareAPI,
) -> None:
    """Attach the join: each variant's result once per round; emit the round when it is ready."""
    settings = worker.settings
    retention_ms = settings.idempotency_retention_s * 1000

    def store(pending: Pending, completed_ms: int | None) -> None:
        key = pending.round.competition_id
        value = {
            **pending.round.to_json(),
            **pending.meta,
            "partition": pending.partition,
            "completedMs": completed_ms,
        }
        rounds.data[key] = value
        rounds.send_changelog(pending.partition, key, value)

    async def publish(pending: Pending) -> None:
        """Share the champion's output on the round's platforms (fallback ids when it fails)."""
        champion = pending.round.outcome().champion
        platforms = pending.meta.get("platforms") or []
        if champion is None or not platforms:
            return
        text = share_text(pending.meta.get("content", ""), pending.round, champion)
        posts = await asyncio.gather(*(share.publish(p, text) for p in platforms))
        pending.meta["posts"] = [
            SharedPost(
                platform=p.platform, post_id=p.post_id, url=p.url, fallback=p.fallback
            ).model_dump(mode="json", by_alias=True)
            for p in posts
        ]

    async def finish(pending: Pending, now: int) -> None:
        """Close a ready round: publish, record, then emit the joined event."""
        pending.round.complete()
        await publish(pending)
        store(pending, now)
        await emit(pending)

    async def emit(pending: Pending) -> None:
        joined_round = pending.round
        tags = FinOpsTags.model_validate(pending.meta["tags"])
        outcome = joined_round.outcome()
        variants = {}
        for name in joined_round.expected:
            r = joined_round.results.get(name)
            variants[name] = (
                VariantSummary(status="missing")
                if r is None
                else VariantSummary(
                    status=r.status,
                    score=r.score if r.scored else None,
                    cost_micros=r.cost_micros,
                    duration_ms=r.duration_ms,
                    error=r.error,
                )
            )
        champion = outcome.champion
        joined = CompetitionJoined(
            competition_id=joined_round.competition_id,
            tenant=joined_round.tenant,
            family=joined_round.family,
            competitors=list(joined_round.expected),
            variants=variants,
            champion=champion,
            champion_output=joined_round.results[champion].output if champion else None,
            missing=list(outcome.missing),
            cost_micros=outcome.cost_micros,
            posts=[SharedPost.model_validate(p) for p in pending.meta.get("posts", [])],
            tags=tags,
            joined_at_ms=now_ms(),
        )
        event = envelope(
            "competition.joined",
            f"{joined_round.competition_id}:joined",
            joined_round.tenant,
            joined,
            joined.joined_at_ms,
            SOURCE,
        )
        await joins.send(key=joined_round.tenant.encode(), value=encode(event), force=True)

    @worker.app.agent(inbound, name="joiner")
    async def joiner_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_within_ms / 1000):
            touched: dict[str, Pending] = {}
            for e in events:
                try:
                    event, short = decode(e.message.value)
                    if short == "variant.run":
                        item: VariantRun | VariantResultEvent = parse_data(event, VariantRun)
                    elif short == "variant.result":
                        item = parse_data(event, VariantResultEvent)
                    else:
                        raise PoisonMessage("unknown_type", f"{event.type} cannot be joined")
                except PoisonMessage as exc:
                    log.error("undecodable variant event skipped", extra={"reason": exc.reason})
                    continue
                key = item.competition_id
                if key not in touched:
                    touched[key] = load(key, item, e.message.partition)
                pending = touched[key]
                if isinstance(item, VariantRun) and "platforms" not in pending.meta:
                    pending.meta.update(content=item.content, platforms=item.platforms)
                if isinstance(item, VariantResultEvent):
                    pending.round.record(
                        VariantResult(
                            item.variant,
                            item.status,
                            item.score,
                            item.cost_micros,
                            item.duration_ms,
                            item.output,
                            item.error,
                        )
                    )
            now = now_ms()
            for pending in touched.values():
                if pending.was_done:  # a redelivery or a redrive: the join may have been lost
                    await emit(pending)
                elif pending.round.is_ready(now):
                    await finish(pending, now)
                else:
                    store(pending, None)

    def load(key: str, item: VariantRun | VariantResultEvent, partition: int) -> Pending:
        raw = rounds.data.get(key)
        if raw:
            return stored(raw)
        fresh = Round(key, item.tenant, item.family, tuple(item.competitors), item.deadline_ms)
        tags = item.tags.model_dump(mode="json", by_alias=True)
        return Pending(fresh, partition, {"tags": tags}, False)

    @worker.app.timer(SWEEP_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def close_overdue_rounds() -> None:
        """Complete rounds whose deadline passed with variants missing; forget old ones."""
        owned = worker.owned(runs_topic)
        if not owned:
            return
        now = now_ms()
        for key, raw in list(rounds.data.items()):
            if raw.get("partition") not in owned:
                continue
            if raw.get("completedMs") is not None:
                if raw["completedMs"] + retention_ms < now:
                    del rounds.data[key]
                    rounds.send_changelog(raw["partition"], key, None, value_serializer="raw")
                continue
            pending = stored(raw)
            if pending.round.is_ready(now):
                await finish(pending, now)


def stored(raw: dict[str, Any]) -> Pending:
    """A round as the joiner's table holds it: the join record plus what the round needs."""
    meta: dict[str, Any] = {
        k: raw[k] for k in ("tags", "content", "platforms", "posts") if k in raw
    }
    joined_round = Round.from_json(raw)
    return Pending(joined_round, raw["partition"], meta, joined_round.completed)


def share_text(content: str, joined_round: Round, champion: str) -> str:
    """What gets published: the round's content and its champion's forecast."""
    output = joined_round.results[champion].output or {}
    forecast = output.get("forecast") or []
    head = ", ".join(f"{v:.1f}" for v in forecast[:6])
    score = joined_round.results[champion].score or 0.0
    return f"{content} Champion: {champion} (score {score:.3f}). Forecast: {head}".strip()
