"""The gateway's bounded view of tasks and rounds: recent ones in memory, older ones on disk.

The view is rebuilt from the topics at every start, so the disk part is a scratch file of this
process (removed on stop), not a database: memory stays bounded by settings whatever the
history, and a GET for an old task still answers from the file.
"""

from __future__ import annotations

import os
import re
import sqlite3
import zlib
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lapverse_streams.events.codec import PoisonMessage
from lapverse_streams.events.models import (
    CompetitionCompleted,
    CompetitionDecision,
    TaskDecision,
    TaskResult,
    TenantConfig,
)

MAX_ENTRY_BYTES = 8 * 1024  # a larger entry (a big result) is kept on disk only
AVERAGE_ENTRY_BYTES = 1024  # memory budget per entry: count and bytes both bound the cache
MAX_UNKNOWN_TENANTS = 1024  # figures kept for tenants the configuration does not know
TABLES = ("tasks", "rounds", "champions", "champion_history")
STORE_FILE = re.compile(r"^gateway-view-(\d+)-[0-9a-f]+\.sqlite$")


class Store:
    """Entries evicted from memory, in one sqlite file; opened on first use, removed on close."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: sqlite3.Connection | None = None

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None)
            # A scratch file rebuilt from the topics at start: no journal, no fsync.
            db.execute("PRAGMA journal_mode=OFF")
            db.execute("PRAGMA synchronous=OFF")
            for table in TABLES:
                db.execute(f"CREATE TABLE IF NOT EXISTS {table} (id TEXT PRIMARY KEY, entry BLOB)")
            self._db = db
        return self._db

    def put(self, table: str, key: str, entry: bytes) -> None:
        """Write (or overwrite) one entry."""
        self._connect().execute(
            f"INSERT OR REPLACE INTO {table} (id, entry) VALUES (?, ?)", (key, entry)
        )

    def get(self, table: str, key: str) -> bytes | None:
        """One entry, if it was ever evicted."""
        if self._db is None:
            return None
        row = self._db.execute(f"SELECT entry FROM {table} WHERE id = ?", (key,)).fetchone()
        return bytes(row[0]) if row else None

    def scan(self, table: str, low: str, high: str, limit: int) -> list[bytes]:
        """Entries with ids in [low, high), highest id first, at most `limit`."""
        if self._db is None:
            return []
        rows = self._db.execute(
            f"SELECT entry FROM {table} WHERE id >= ? AND id < ? ORDER BY id DESC LIMIT ?",
            (low, high, limit),
        ).fetchall()
        return [bytes(row[0]) for row in rows]

    def count(self, table: str) -> int:
        """How many entries the file holds."""
        if self._db is None:
            return 0
        return int(self._db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])

    def close(self) -> None:
        """Close the file and remove it."""
        if self._db is not None:
            self._db.close()
            self._db = None
        self.path.unlink(missing_ok=True)


def store_path(data_dir: str) -> Path:
    """A file of this process and this view, so gateways sharing a data dir never collide."""
    return Path(data_dir) / f"gateway-view-{os.getpid()}-{os.urandom(4).hex()}.sqlite"


def remove_stale_stores(data_dir: str) -> None:
    """Remove the files of gateways that died without stopping (their pid is gone)."""
    directory = Path(data_dir)
    if not directory.is_dir():
        return
    for path in directory.iterdir():
        match = STORE_FILE.match(path.name)
        if match and not _alive(int(match.group(1))):
            path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Recent:
    """Encoded entries bounded by count and bytes; the least recently written go to the store."""

    def __init__(self, store: Store, table: str, max_entries: int) -> None:
        self._store = store
        self._table = table
        self.max_entries = max(1, max_entries)
        self.max_bytes = self.max_entries * AVERAGE_ENTRY_BYTES
        self._entries: OrderedDict[str, bytes] = OrderedDict()
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        """The entry in memory, else the one on disk."""
        entry = self._entries.get(key)
        return entry if entry is not None else self._store.get(self._table, key)

    def put(self, key: str, entry: bytes) -> None:
        """Keep an entry as the most recent one; a large one goes straight to disk."""
        old = self._entries.pop(key, None)
        if old is not None:
            self.bytes -= len(old)
        if len(entry) > MAX_ENTRY_BYTES:
            self._store.put(self._table, key, entry)
            return
        self._entries[key] = entry
        self.bytes += len(entry)
        while len(self._entries) > self.max_entries or self.bytes > self.max_bytes:
            evicted_key, evicted = self._entries.popitem(last=False)
            self.bytes -= len(evicted)
            self._store.put(self._table, evicted_key, evicted)


@dataclass(frozen=True)
class TaskState:
    """What the gateway knows of one decided task."""

    tenant: str
    decision: dict[str, Any]
    result: dict[str, Any] | None = None
    started: bool = False

    @property
    def status(self) -> str:
        """The decision's status, `running` once an executor took it, then the result's."""
        if self.result is not None:
            return str(self.result["status"])
        if self.started and self.decision["status"] == "accepted":
            return "running"
        return str(self.decision["status"])


@dataclass(frozen=True)
class CompetitionState:
    """What the gateway knows of one decided self-compete round."""

    tenant: str
    decision: dict[str, Any]
    completed: dict[str, Any] | None = None


# An entry is {"tenant", "decision", ...}; its decision is None while only later events of
# the task or round were read (they come on other topics, so a rebuild may read them first).
Entry = dict[str, Any]


class EntryView:
    """Entries by id in a bounded cache, kept as compressed JSON."""

    def __init__(self, recent: Recent) -> None:
        self.recent = recent

    def _load(self, key: str) -> Entry | None:
        raw = self.recent.get(key)
        return orjson.loads(zlib.decompress(raw)) if raw is not None else None

    def _entry(self, key: str, tenant: str) -> Entry:
        """The entry to update with a record of `tenant` (a new one if none)."""
        entry = self._load(key) or {"tenant": tenant, "decision": None}
        if entry["tenant"] != tenant:
            raise PoisonMessage(
                "key_mismatch", f"record of tenant {tenant!r} for one of {entry['tenant']!r}"
            )
        return entry

    def _save(self, key: str, entry: Entry) -> None:
        # Compressed: smaller, and an exact-size copy (orjson's buffer is over-allocated).
        self.recent.put(key, zlib.compress(orjson.dumps(entry), 1))


class TaskView(EntryView):
    """Tasks by id, holding only what GET shows: decision, start and result, in any order."""

    def get(self, task_id: str) -> TaskState | None:
        """The task once decided; None before its decision was read."""
        entry = self._load(task_id)
        if entry is None or entry["decision"] is None:
            return None
        return TaskState(
            entry["tenant"], entry["decision"], entry.get("result"), entry.get("started", False)
        )

    def decide(self, tenant: str, decision: TaskDecision) -> bool:
        """Apply a decision unless it is one already applied; True when applied."""
        entry = self._load(decision.task_id)
        if entry is not None and entry["decision"] is not None:
            if decision.decided_at_ms <= entry["decision"]["decidedAtMs"]:
                return False  # a re-emitted decision is the stored one, so it is not later
            entry = None  # the key expired and was decided anew: start over
        if entry is None or entry["tenant"] != tenant:  # the decision rules over progress
            entry = {"tenant": tenant}
        entry["decision"] = {
            "taskId": decision.task_id,
            "status": decision.status,
            "reason": decision.reason.value,
            "costEstimateMicros": decision.cost_estimate_micros,
            "tags": decision.tags.model_dump(mode="json", by_alias=True),
            "decidedAtMs": decision.decided_at_ms,
        }
        self._save(decision.task_id, entry)
        return True

    def start(self, tenant: str, task_id: str) -> None:
        """An executor took the task (read before its decision at times)."""
        entry = self._entry(task_id, tenant)
        if not entry.get("started"):
            entry["started"] = True
            self._save(task_id, entry)

    def finish(self, tenant: str, result: TaskResult) -> bool:
        """Apply a task's first result; True when applied."""
        entry = self._entry(result.task_id, tenant)
        if entry.get("result") is not None:
            return False
        entry["result"] = {
            "status": result.status,
            "costMicros": result.cost_micros,
            "result": result.result,
            "error": result.error,
            "durationMs": result.duration_ms,
        }
        self._save(result.task_id, entry)
        return True


class CompetitionView(EntryView):
    """Self-compete rounds by id: the first decision and the completed round, in any order."""

    def get(self, competition_id: str) -> CompetitionState | None:
        """The round once decided; None before its decision was read."""
        entry = self._load(competition_id)
        if entry is None or entry["decision"] is None:
            return None
        return CompetitionState(entry["tenant"], entry["decision"], entry.get("completed"))

    def decide(self, tenant: str, decision: CompetitionDecision) -> bool:
        """Apply a round's first decision; True when applied."""
        entry = self._load(decision.competition_id)
        if entry is not None and entry["decision"] is not None:
            return False
        if entry is None or entry["tenant"] != tenant:  # the decision rules over a completion
            entry = {"tenant": tenant}
        entry["decision"] = {
            "competitionId": decision.competition_id,
            "status": decision.status,
            "reason": decision.reason.value,
            "request": {"family": decision.request.family},  # the part of the request GET shows
            "competitors": decision.competitors,
            "costEstimateMicros": decision.cost_estimate_micros,
            "tags": decision.tags.model_dump(mode="json", by_alias=True),
            "decidedAtMs": decision.decided_at_ms,
        }
        self._save(decision.competition_id, entry)
        return True

    def complete(self, tenant: str, completed: CompetitionCompleted) -> bool:
        """Apply a round's first completion; True when applied."""
        entry = self._entry(completed.competition_id, tenant)
        if entry.get("completed") is not None:
            return False
        entry["completed"] = completed.model_dump(
            mode="json",
            by_alias=True,
            include={
                "scores",
                "champion",
                "missing",
                "variants",
                "champion_output",
                "cost_micros",
                "promotion",
                "posts",
            },
        )
        self._save(completed.competition_id, entry)
        return True


def empty_figures() -> dict[str, int]:
    """Counters of one tenant in the status report."""
    return {"completed": 0, "failed": 0, "rejected": 0, "costMicros": 0, "good": 0, "bad": 0}


class TenantFigures:
    """Per-tenant counters for /api/status, kept as records arrive, bounded by the tenants."""

    def __init__(self, tenants: Mapping[str, TenantConfig], default_objective_ms: int) -> None:
        self._tenants = tenants
        self._default_objective_ms = default_objective_ms
        self.per_tenant: dict[str, dict[str, int]] = {}

    def rejected(self, tenant: str) -> None:
        """A task of the tenant was rejected."""
        self._entry(tenant)["rejected"] += 1

    def finished(self, tenant: str, result: TaskResult) -> None:
        """A task of the tenant finished: good when completed within the tenant's objective."""
        entry = self._entry(tenant)
        entry[result.status] += 1
        entry["costMicros"] += result.cost_micros
        config = self._tenants.get(tenant)
        objective_ms = config.latency_objective_ms if config else self._default_objective_ms
        good = result.status == "completed" and result.duration_ms <= objective_ms
        entry["good" if good else "bad"] += 1

    def _entry(self, tenant: str) -> dict[str, int]:
        entry = self.per_tenant.get(tenant)
        if entry is None:
            if len(self.per_tenant) >= len(self._tenants) + MAX_UNKNOWN_TENANTS:
                for name in [n for n in self.per_tenant if n not in self._tenants]:
                    del self.per_tenant[name]  # figures nobody is shown; keeps the dict bounded
            entry = self.per_tenant[tenant] = empty_figures()
        return entry
