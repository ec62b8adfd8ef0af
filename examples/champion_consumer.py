"""A downstream service that follows LapVerse champions and picks the variant a request gets.

It reads `lapverse-champions` (champion.promoted, and the rollout's champion.stepped,
.rolled-back, .pinned and .unpinned) and `lapverse-flags` (flag.configured) with plain
aiokafka, keeps the current champion of each tenant and family, and evaluates the champion
flag `champion.<tenant>.<family>` with the platform's own flag evaluator.

    python examples/champion_consumer.py --bootstrap 127.0.0.1:9092 [--prefix P]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer

from lapverse_streams.domain import flags

CHAMPIONS_TOPIC = "lapverse-champions"
FLAGS_TOPIC = "lapverse-flags"
CHAMPION_EVENTS = frozenset(
    f"io.lapverse.champion.{kind}.v1"
    for kind in ("promoted", "stepped", "rolled-back", "pinned", "unpinned")
)
FLAG_CONFIGURED = "io.lapverse.flag.configured.v1"

log = logging.getLogger("champion-consumer")


@dataclass(frozen=True)
class Champion:
    """The current champion of a tenant's family, as its latest champion event says."""

    tenant: str
    family: str
    champion: str
    previous: str | None
    baseline: str  # the variant it beat: what the rest of the rollout keeps getting
    sequence: int
    flag_key: str
    rollout_percent: int
    state: str  # canary, ramping, full, pinned or rolled-back
    changed_at_ms: int


def champion_flag_key(tenant: str, family: str) -> str:
    """The flag that rolls a tenant's family champion out."""
    return f"champion.{tenant}.{family}"


class ChampionConsumer:
    """Current champions per tenant and family, and which variant serves a request key."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic_prefix: str = "",
        on_champion: Callable[[Champion], None] | None = None,
        on_flag: Callable[[str, dict[str, Any] | None], None] | None = None,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self.champions_topic = f"{topic_prefix}{CHAMPIONS_TOPIC}"
        self.flags_topic = f"{topic_prefix}{FLAGS_TOPIC}"
        self._on_champion = on_champion
        self._on_flag = on_flag
        self._champions: dict[tuple[str, str], Champion] = {}
        self._flags: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Condition()
        self._consumer: AIOKafkaConsumer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Read both topics from their beginning (no consumer group: every instance sees all)."""
        consumer = AIOKafkaConsumer(
            self.champions_topic,
            self.flags_topic,
            bootstrap_servers=self._bootstrap_servers,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        await consumer.start()
        self._consumer = consumer
        self._task = asyncio.create_task(self._run(), name="champion-consumer")

    async def stop(self) -> None:
        """Stop reading and close the consumer."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._consumer is not None:
            await self._consumer.stop()
            self._consumer = None

    async def __aenter__(self) -> ChampionConsumer:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    def champion(self, tenant: str, family: str) -> Champion | None:
        """The tenant's current champion of `family`, None before its first promotion."""
        return self._champions.get((tenant, family))

    def variant_for(self, tenant: str, family: str, key: str) -> str | None:
        """The variant that serves request `key`: the champion flag, bucketed on the key.

        Until the flag arrives the request keeps the variant the champion beat, as the flag's
        default would; None when the family has no champion and no flag.
        """
        flag_key = champion_flag_key(tenant, family)
        resolution = flags.evaluate(
            flag_key, self._flags.get(flag_key), tenant, int(time.time()), targeting_key=key
        )
        if isinstance(resolution.value, str):
            return resolution.value
        current = self.champion(tenant, family)
        return (current.baseline or current.champion) if current else None

    async def wait_until(self, condition: Callable[[], bool], timeout_s: float = 30.0) -> None:
        """Return once `condition()` holds, checking after every record applied."""
        async with self._changed:
            await asyncio.wait_for(self._changed.wait_for(condition), timeout_s)

    def apply(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        """Apply one record of either topic; a record that is not ours is logged and skipped."""
        if topic == self.flags_topic and value is None and key is not None:
            flag_key = key.decode()
            self._flags.pop(flag_key, None)  # a tombstone deletes the flag
            if self._on_flag:
                self._on_flag(flag_key, None)
            return
        try:
            event = json.loads(value or b"")
            kind, data = event["type"], event["data"]
            if kind in CHAMPION_EVENTS:
                self._apply_champion(data)
            elif kind == FLAG_CONFIGURED:
                self._apply_flag(data)
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("skipped a record on %s: %r", topic, exc)

    def _apply_champion(self, data: dict[str, Any]) -> None:
        current = Champion(
            tenant=data["tenant"],
            family=data["family"],
            champion=data["champion"],
            previous=data.get("previous"),
            baseline=data.get("baseline", ""),
            sequence=int(data["sequence"]),
            flag_key=data["flagKey"],
            rollout_percent=int(data["rolloutPercent"]),
            state=data.get("state", "canary"),
            changed_at_ms=int(data.get("promotedAtMs") or data["changedAtMs"]),
        )
        known = self._champions.get((current.tenant, current.family))
        if known is not None and known.sequence >= current.sequence:
            return  # a copy of an event already applied
        self._champions[(current.tenant, current.family)] = current
        if self._on_champion:
            self._on_champion(current)

    def _apply_flag(self, data: dict[str, Any]) -> None:
        flag_key, definition = data["flagKey"], data["definition"]
        if not isinstance(flag_key, str) or not isinstance(definition, dict):
            raise TypeError("flag.configured needs a flagKey and a definition object")
        self._flags[flag_key] = definition
        if self._on_flag:
            self._on_flag(flag_key, definition)

    async def _run(self) -> None:
        assert self._consumer is not None
        while True:
            batches = await self._consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                for record in records:
                    self.apply(tp.topic, record.key, record.value)
            if batches:
                async with self._changed:
                    self._changed.notify_all()


def _print_champion(change: Champion) -> None:
    was = f" (was {change.previous})" if change.previous else ""
    print(
        f"{change.tenant}/{change.family}: {change.champion} is champion{was}, "
        f"event #{change.sequence}, {change.state} at {change.rollout_percent} %",
        flush=True,
    )


async def _follow(bootstrap: str, prefix: str, sample_keys: int) -> None:
    keys = [f"request-{n}" for n in range(sample_keys)]

    def show_flag(flag_key: str, definition: dict[str, Any] | None) -> None:
        if not flag_key.startswith("champion.") or definition is None:
            return
        tenant, _, family = flag_key.removeprefix("champion.").rpartition(".")
        served = Counter(consumer.variant_for(tenant, family, key) for key in keys)
        shares = ", ".join(f"{variant} {count}" for variant, count in served.most_common())
        print(f"{flag_key}: {shares} of {len(keys)} request keys", flush=True)

    consumer = ChampionConsumer(bootstrap, prefix, on_champion=_print_champion, on_flag=show_flag)
    async with consumer:
        print(f"following {consumer.champions_topic} and {consumer.flags_topic}", flush=True)
        await asyncio.Event().wait()  # until Ctrl-C


def main(argv: list[str] | None = None) -> None:
    """Print champion changes as they arrive, until interrupted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", default="127.0.0.1:9092", help="Kafka host:port")
    parser.add_argument(
        "--prefix",
        default=os.environ.get("LAPVERSE_TOPIC_PREFIX", ""),
        help="topic prefix (default: LAPVERSE_TOPIC_PREFIX)",
    )
    parser.add_argument(
        "--sample-keys", type=int, default=1000, help="request keys to try on each flag change"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_follow(args.bootstrap, args.prefix, args.sample_keys))


if __name__ == "__main__":
    main()
