"""The join of a round's variant results, keyed by competition id: once per variant, then emit."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import faust
import orjson
from opentelemetry import trace

from agents.records import check_routing, consumed
from agents.transactions import (
    Collector,
    Positions,
    Produce,
    by_partition,
    changelog_write,
    offsets_of,
    stop_after_failed_write,
)
from lapverse_streams.clients.share_api import ShareAPI
from lapverse_streams.clock import now_ms
from lapverse_streams.domain.tournament import Round, VariantResult
from lapverse_streams.events.codec import (
    PoisonMessage,
    decode,
    encode_event,
    header,
    parse_data,
)
from lapverse_streams.events.deadletter import Consumed, DeadLetters
from lapverse_streams.events.models import (
    CompetitionJoined,
    FinOpsTags,
    SharedPost,
    VariantResultEvent,
    VariantRun,
    VariantSummary,
)
from lapverse_streams.observability.tracing import (
    TRACEPARENT,
    Attributes,
    consumer_span,
    inject_headers,
)

if TYPE_CHECKING:
    from agents.app import Worker

log = logging.getLogger(__name__)
tracer = trace.get_tracer("lapverse.joiner")
SOURCE = "/lapverse/tournament"
AGENT = "joiner"
SWEEP_INTERVAL_S = 1.0
ROUNDS_TABLE = "rounds"

Item = VariantRun | VariantResultEvent
SendJoin = Callable[[bytes, bytes], Awaitable[None]]  # (key, value)


class RoundStore(Protocol):
    """The joiner's table: one stored round per competition id."""

    def get(self, key: str) -> Any:
        """The stored value, or None."""
        ...

    def put(self, partition: int, key: str, value: dict[str, Any]) -> None:
        """Store a round on its partition."""
        ...

    def delete(self, partition: int | None, key: str) -> None:
        """Forget a round (on its partition when known)."""
        ...

    def items(self) -> list[tuple[str, Any]]:
        """A snapshot of every stored round."""
        ...


@dataclass
class InMemoryRounds:
    """A RoundStore on a dict, for tests."""

    data: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str) -> Any:
        """The stored value, or None."""
        return self.data.get(key)

    def put(self, partition: int, key: str, value: dict[str, Any]) -> None:
        """Store a round."""
        self.data[key] = value

    def delete(self, partition: int | None, key: str) -> None:
        """Forget a round."""
        self.data.pop(key, None)

    def items(self) -> list[tuple[str, Any]]:
        """A snapshot of every stored round."""
        return list(self.data.items())


class TableRounds(InMemoryRounds):
    """A RoundStore on a Faust table: each write also goes to the table's changelog.

    While `collector` collects (exactly once), the changelog writes go to it instead, for
    the transaction of the batch.
    """

    def __init__(self, table: Any, collector: Collector | None = None) -> None:
        super().__init__(table.data)
        self.table = table
        self.collector = collector or Collector()

    def put(self, partition: int, key: str, value: dict[str, Any]) -> None:
        """Store a round and log it."""
        self.data[key] = value
        self._log(partition, key, value)

    def delete(self, partition: int | None, key: str) -> None:
        """Forget a round; its changelog gets a tombstone when the partition is known."""
        self.data.pop(key, None)
        if partition is not None:
            self._log(partition, key, None)

    def _log(self, partition: int, key: str, value: dict[str, Any] | None) -> None:
        if self.collector.collecting:
            self.collector.add(changelog_write(self.table, partition, key, value))
        elif value is None:
            self.table.send_changelog(partition, key, None, value_serializer="raw")
        else:
            self.table.send_changelog(partition, key, value)


@dataclass
class Pending:
    """A round touched by a batch: its join record, what it needs when it ends, who touched it."""

    round: Round
    partition: int
    meta: dict[str, Any]  # tags, content, platforms, traceparent and (once published) posts
    was_done: bool
    records: tuple[Consumed, ...] = ()

    def applied(self, item: Item, record: Consumed) -> Pending:
        """A copy with the item applied: the original is untouched if this raises."""
        if item.tenant != self.round.tenant:
            raise PoisonMessage("key_mismatch", "data.tenant is not the round's tenant")
        if item.family != self.round.family:
            raise PoisonMessage("wrong_schema", "data.family is not the round's family")
        following = dataclasses.replace(
            self,
            round=dataclasses.replace(self.round, results=dict(self.round.results)),
            meta=dict(self.meta),
            records=(*self.records, record),
        )
        if isinstance(item, VariantRun) and "platforms" not in following.meta:
            following.meta.update(content=item.content, platforms=item.platforms)
        traceparent = header(record.headers, TRACEPARENT)
        if traceparent and TRACEPARENT not in following.meta:  # the round's trace, for its join
            following.meta[TRACEPARENT] = traceparent
        if isinstance(item, VariantResultEvent):
            following.round.record(
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
        return following


def fresh(item: Item, partition: int) -> Pending:
    """A round first seen in this item."""
    new = Round(
        item.competition_id, item.tenant, item.family, tuple(item.competitors), item.deadline_ms
    )
    return Pending(
        new, partition, {"tags": item.tags.model_dump(mode="json", by_alias=True)}, False
    )


def stored(raw: Any) -> Pending:
    """A round as the table holds it; raises for a value that is not a readable round."""
    if not isinstance(raw, dict):
        raise PoisonMessage("wrong_schema", "a stored round must be an object")
    meta = {k: raw[k] for k in ("tags", "content", "platforms", "posts", TRACEPARENT) if k in raw}
    FinOpsTags.model_validate(meta.get("tags"))
    completed_ms = raw.get("completedMs")
    if completed_ms is not None and not isinstance(completed_ms, int):
        raise PoisonMessage("wrong_schema", "completedMs must be a time in ms")
    joined_round = Round.from_json(raw)
    return Pending(joined_round, int(raw["partition"]), meta, joined_round.completed)


def parse_item(record: Consumed) -> Item:
    """A variant.run or variant.result whose key, subject and tenant agree; raises otherwise."""
    event, short = decode(record.value)
    item: Item
    if short == "variant.run":
        item = parse_data(event, VariantRun)
    elif short == "variant.result":
        item = parse_data(event, VariantResultEvent)
    else:
        raise PoisonMessage("unknown_type", f"{event.type} cannot be joined")
    check_routing(record, event, item.competition_id, item.tenant, item.tags)
    return item


class Joiner:
    """Joins each variant's result once per round; emits the round when it is ready.

    Each record is applied to a copy of its round, so a record that fails in any way is
    dead-lettered and leaves nothing behind: a round touched only by failed records is not
    stored, and the other rounds of the batch go on.
    """

    def __init__(
        self,
        rounds: RoundStore,
        send_join: SendJoin,
        share: ShareAPI,
        dead_letters: DeadLetters,
        retention_ms: int,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        self.rounds = rounds
        self.send_join = send_join
        self.share = share
        self.dead_letters = dead_letters
        self.retention_ms = retention_ms
        self.clock_ms = clock_ms

    async def process(self, records: list[Consumed]) -> None:
        """Apply a batch of variant runs and results, then settle every round it touched."""
        touched: dict[str, Pending] = {}
        for record in records:
            try:
                item = parse_item(record)
                key = item.competition_id
                current = touched.get(key) or self._load(key, item, record.partition)
                touched[key] = current.applied(item, record)
            except Exception as exc:  # one record's failure is that record's alone
                await self.dead_letters.failed(AGENT, record, exc)
        now = self.clock_ms()
        for pending in touched.values():
            try:
                await self._settle(pending, now)
            except Exception as exc:  # the round's records failed together
                for record in pending.records:
                    await self.dead_letters.failed(AGENT, record, exc)

    async def close_overdue(self, partitions: set[int]) -> None:
        """Complete rounds of `partitions` whose deadline passed; forget old completed ones."""
        now = self.clock_ms()
        for key, raw in self.rounds.items():
            partition = raw.get("partition") if isinstance(raw, dict) else None
            if isinstance(partition, int) and partition not in partitions:
                continue
            try:
                pending = stored(raw)
            except Exception as exc:  # a stored round nobody can read: out of the table
                await self._unreadable(key, raw, partition, exc)
                continue
            completed_ms = raw.get("completedMs")
            if completed_ms is not None:
                if completed_ms + self.retention_ms < now:
                    self.rounds.delete(pending.partition, key)
            elif pending.round.is_ready(now):
                try:
                    await self._finish(pending, now)
                except Exception:  # e.g. the broker is away: the next sweep tries again
                    log.exception("round could not be closed", extra={"competitionId": key})

    def _load(self, key: str, item: Item, partition: int) -> Pending:
        raw = self.rounds.get(key)
        return stored(raw) if raw else fresh(item, partition)

    async def _settle(self, pending: Pending, now: int) -> None:
        if pending.was_done:  # a redelivery or a redrive: the join may have been lost
            with join_span(pending, redelivered=True):
                await self._emit(pending, self._joined(pending))
        elif pending.round.is_ready(now):
            await self._finish(pending, now)
        else:
            self._store(pending, None)

    async def _finish(self, pending: Pending, now: int) -> None:
        """Close a ready round: publish, build the join, record it, then emit it."""
        with join_span(pending):
            pending.round.complete()
            await self._publish(pending)
            joined = self._joined(pending)
            self._store(pending, now)
            await self._emit(pending, joined)

    def _store(self, pending: Pending, completed_ms: int | None) -> None:
        key = pending.round.competition_id
        value = {
            **pending.round.to_json(),
            **pending.meta,
            "partition": pending.partition,
            "completedMs": completed_ms,
        }
        self.rounds.put(pending.partition, key, value)

    async def _publish(self, pending: Pending) -> None:
        """Share the champion's output on the round's platforms (fallback ids when it fails)."""
        champion = pending.round.outcome().champion
        platforms = pending.meta.get("platforms") or []
        if champion is None or not platforms:
            return
        text = share_text(pending.meta.get("content", ""), pending.round, champion)
        posts = await asyncio.gather(
            *(self.share.publish(p, text, f"{pending.round.competition_id}:{p}") for p in platforms)
        )
        pending.meta["posts"] = [
            SharedPost(
                platform=p.platform, post_id=p.post_id, url=p.url, fallback=p.fallback
            ).model_dump(mode="json", by_alias=True)
            for p in posts
        ]

    def _joined(self, pending: Pending) -> bytes:
        """The competition.joined event of a completed round."""
        joined_round = pending.round
        outcome = joined_round.outcome()
        variants = {name: summary(joined_round.results.get(name)) for name in joined_round.expected}
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
            tags=FinOpsTags.model_validate(pending.meta["tags"]),
            joined_at_ms=self.clock_ms(),
        )
        event_id = f"{joined_round.competition_id}:joined"
        return encode_event(
            "competition.joined", event_id, joined_round.tenant, joined, joined.joined_at_ms, SOURCE
        )

    async def _emit(self, pending: Pending, joined: bytes) -> None:
        await self.send_join(pending.round.tenant.encode(), joined)

    async def _unreadable(self, key: str, raw: Any, partition: Any, exc: Exception) -> None:
        """Dead-letter a stored round that cannot be read, and drop it from the table."""
        part = partition if isinstance(partition, int) else None
        try:
            value = orjson.dumps(raw, default=str)
        except TypeError:
            value = repr(raw).encode()
        record = Consumed(ROUNDS_TABLE, -1 if part is None else part, -1, key.encode(), value, [])
        await self.dead_letters.failed(AGENT, record, exc)
        self.rounds.delete(part, key)


def join_span(pending: Pending, redelivered: bool = False) -> AbstractContextManager[trace.Span]:
    """The join's span: a child of the last record of the round in the batch, else of the round.

    The join it emits carries this span on (`send_join` injects the current context).
    """
    carried = [r.headers for r in pending.records if header(r.headers, TRACEPARENT)]
    parent = carried[-1] if carried else [(TRACEPARENT, pending.meta.get(TRACEPARENT))]
    joined_round = pending.round
    attributes: Attributes = {
        "lapverse.competition_id": joined_round.competition_id,
        "lapverse.tenant": joined_round.tenant,
        "lapverse.family": joined_round.family,
        "lapverse.variants_expected": len(joined_round.expected),
        "lapverse.variants_received": len(joined_round.results),
        "lapverse.redelivered": redelivered,
    }
    return consumer_span(tracer, "join competition", parent, attributes)


def summary(result: VariantResult | None) -> VariantSummary:
    """One variant's line in the joined round."""
    if result is None:
        return VariantSummary(status="missing")
    return VariantSummary(
        status=result.status,
        score=result.score if result.scored else None,
        cost_micros=result.cost_micros,
        duration_ms=result.duration_ms,
        error=result.error,
    )


def share_text(content: str, joined_round: Round, champion: str) -> str:
    """What gets published: the round's content and its champion's forecast."""
    output = joined_round.results[champion].output or {}
    forecast = output.get("forecast") or []
    head = ", ".join(f"{v:.1f}" for v in forecast[:6])
    score = joined_round.results[champion].score or 0.0
    return f"{content} Champion: {champion} (score {score:.3f}). Forecast: {head}".strip()


def register_joiner(
    worker: Worker,
    inbound: faust.TopicT,
    joins: faust.TopicT,
    rounds: Any,
    runs_topic: str,
    share: ShareAPI,
) -> None:
    """Attach the joiner agent and its sweep of overdue rounds to the app."""
    settings = worker.settings

    collector = Collector()
    joins_topic = joins.get_topic_name()

    async def send_join(key: bytes, value: bytes) -> None:
        headers = inject_headers()  # the join's span (join_span), for the governor's settlement
        if collector.collecting:
            collector.add(Produce(joins_topic, key, value, headers))
        else:
            await joins.send(key=key, value=value, headers=headers, force=True)

    joiner = Joiner(
        TableRounds(rounds, collector),
        send_join,
        share,
        worker.dead_letters,
        settings.idempotency_retention_s * 1000,
    )
    transactions = worker.transactions
    exclusive = asyncio.Lock()  # exactly once: the agent and the sweep collect in turn
    positions = Positions()

    async def commit(partition: int, step: Awaitable[None], records: list[Consumed]) -> None:
        """Exactly once: run `step` for one partition and commit what it wrote as one."""
        assert transactions is not None
        collector.start()
        try:
            await step
        finally:
            writes = collector.stop()
        offsets = offsets_of((r.topic, r.partition, r.offset) for r in records)
        try:
            await transactions.commit(AGENT, partition, writes, offsets)
        except Exception as exc:
            await stop_after_failed_write(worker.app, AGENT, exc)
            raise

    @worker.app.agent(inbound, name=AGENT)
    async def joiner_agent(stream: Any) -> None:
        async for events in stream.take_events(settings.batch_max, settings.batch_window_s):
            batch = [consumed(e.message) for e in events]
            if transactions is None:
                await joiner.process(batch)
                continue
            batch = positions.fresh(batch, lambda r: (r.topic, r.partition, r.offset))
            async with exclusive:
                for partition, part in by_partition(batch, lambda r: r.partition).items():
                    await commit(partition, joiner.process(part), part)

    @worker.app.timer(SWEEP_INTERVAL_S)  # type: ignore[untyped-decorator]
    async def close_overdue_rounds() -> None:
        """Complete rounds whose deadline passed with variants missing; forget old ones."""
        owned = worker.owned(runs_topic)
        if not owned:
            return
        if transactions is None:
            await joiner.close_overdue(owned)
            return
        async with exclusive:
            for partition in sorted(owned):
                await commit(partition, joiner.close_overdue({partition}), [])
