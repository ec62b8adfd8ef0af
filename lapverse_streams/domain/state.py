"""The governor's state: typed stored values, the reservation index, one batch transaction.

The model is quix-streams' `PartitionTransaction`: a batch reads and writes its tables through
one `BatchState`. Reads see the batch's own writes; every key written is recorded once, with
its partition, and sent once as a changelog record when the batch ends (`writes`), however
often the batch changed it. Each record's writes are journaled, so a record that fails is
undone (`domain/journal.py`) and the rest of the batch goes on.

Reservations are not stored in the ledger: an accepted request's dedup record *is* its
reservation (idempotent by presence), and `Reservations` derives each tenant's reserved total
in memory from the dedup store, whoever writes it: the governor, table recovery, expiry.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from typing import Any, Generic, TypeVar

import orjson

from lapverse_streams.domain.journal import MISSING, Journal

V = TypeVar("V")


@dataclass(slots=True)
class DedupRecord:
    """What the governor remembers of a request, by its task or competition id."""

    kind: str  # "task" or "competition"
    request_id: str
    tenant: str
    key: str  # the idempotency key
    fingerprint: str
    status: str  # accepted, rejected, then completed or failed
    decision: bytes  # the decision event, replayed byte for byte
    origin: tuple[int, int]  # (partition, offset) of the request
    created_ms: int
    estimate: int  # micro-dollars reserved while accepted
    type: str  # task type or competition family (a metric label)
    cost_center: str
    final_offset: int | None = None
    cost: int = 0
    result: Any = None
    error: str | None = None
    duration_ms: int = 0
    finished_ms: int = 0
    outputs: tuple[tuple[str, bytes, bytes], ...] = ()  # a settled round's events

    @property
    def reserved(self) -> int:
        """Micro-dollars this record holds on the tenant's ledger."""
        return self.estimate if self.status == "accepted" else 0

    def to_bytes(self) -> bytes:
        """orjson, with the decision and outputs embedded as JSON, not as strings of JSON."""
        out: dict[str, Any] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name not in _EMBEDDED
        }
        out["decision"] = orjson.Fragment(self.decision)
        out["outputs"] = [[s, k.decode(), orjson.Fragment(v)] for s, k, v in self.outputs]
        return orjson.dumps(out)

    @classmethod
    def from_bytes(cls, raw: bytes) -> DedupRecord:
        """Inverse of to_bytes; also reads the earlier camelCase dict with JSON strings."""
        obj = orjson.loads(raw)
        if "taskId" in obj:
            return cls.from_legacy(obj)
        obj["decision"] = orjson.dumps(obj["decision"])
        obj["origin"] = tuple(obj["origin"])
        obj["outputs"] = tuple((s, k.encode(), orjson.dumps(v)) for s, k, v in obj["outputs"])
        return cls(**obj)

    @classmethod
    def from_legacy(cls, obj: Mapping[str, Any]) -> DedupRecord:
        """A record as stored before typed values (camelCase, decision as a JSON string)."""
        return cls(
            kind=obj.get("kind", "task"),
            request_id=obj["taskId"],
            tenant=obj["tenant"],
            key=obj["key"],
            fingerprint=obj["fingerprint"],
            status=obj["status"],
            decision=obj["decision"].encode(),
            origin=(obj["origin"][0], obj["origin"][1]),
            created_ms=obj["createdMs"],
            estimate=obj["estimate"],
            type=obj["type"],
            cost_center=obj["costCenter"],
            final_offset=obj.get("finalOffset"),
            cost=obj.get("cost", 0),
            result=obj.get("result"),
            error=obj.get("error"),
            duration_ms=obj.get("durationMs", 0),
            finished_ms=obj.get("finishedMs", 0),
            outputs=tuple((s, k.encode(), v.encode()) for s, k, v in obj.get("outputs", ())),
        )


_EMBEDDED = ("decision", "outputs")


class TenantReservations:
    """One tenant's reserved estimates by request id, with their total."""

    __slots__ = ("items", "total")

    def __init__(self) -> None:
        self.items: dict[str, int] = {}
        self.total = 0

    def hold(self, request_id: str, micros: int, journal: Journal | None = None) -> None:
        """Reserve `micros` for the request (idempotent: holding twice holds once)."""
        if journal is not None:
            journal.note(self.items, request_id)
            journal.note(_Attrs(self), "total")
        self.total += micros - self.items.get(request_id, 0)
        self.items[request_id] = micros

    def release(self, request_id: str, journal: Journal | None = None) -> None:
        """Release the request's reservation, if it holds one."""
        if request_id not in self.items:
            return
        if journal is not None:
            journal.note(self.items, request_id)
            journal.note(_Attrs(self), "total")
        self.total -= self.items.pop(request_id)


class _Attrs(MutableMapping[str, Any]):
    """An object's slots as a mapping, so the journal can note and restore one."""

    __slots__ = ("_obj",)

    def __init__(self, obj: object) -> None:
        self._obj = obj

    def __getitem__(self, name: str) -> Any:
        try:
            return getattr(self._obj, name)
        except AttributeError:
            raise KeyError(name) from None

    def __setitem__(self, name: str, value: Any) -> None:
        setattr(self._obj, name, value)

    def __delitem__(self, name: str) -> None:
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


class Reservations:
    """Every tenant's reservations, derived from the dedup records it is told about."""

    def __init__(self) -> None:
        self._tenants: dict[str, TenantReservations] = {}

    def of(self, tenant_id: str) -> TenantReservations:
        """The tenant's reservations (created empty)."""
        found = self._tenants.get(tenant_id)
        if found is None:
            found = self._tenants[tenant_id] = TenantReservations()
        return found

    def total(self, tenant_id: str) -> int:
        """The tenant's reserved micro-dollars."""
        found = self._tenants.get(tenant_id)
        return found.total if found else 0

    def tenants(self) -> Iterable[tuple[str, TenantReservations]]:
        """Each tenant with its reservations."""
        return self._tenants.items()

    def follow(self, old: DedupRecord | None, new: DedupRecord | None) -> None:
        """A dedup record went from `old` to `new` (None: absent)."""
        record = new or old
        if record is None:
            return
        if new is not None and new.reserved:
            self.of(new.tenant).hold(new.request_id, new.reserved)
        else:
            self.of(record.tenant).release(record.request_id)

    def clear(self) -> None:
        """Forget everything (the store was cleared)."""
        self._tenants.clear()


class DedupStore(dict[str, DedupRecord]):
    """The dedup table's in-memory dict; every write keeps `reservations` in step.

    Faust's memory store writes recovered records with `update` and deletes with `pop`, so
    every way into the dict is covered here.
    """

    def __init__(self, reservations: Reservations) -> None:
        super().__init__()
        self.reservations = reservations

    def __setitem__(self, key: str, value: DedupRecord) -> None:
        self.reservations.follow(self.get(key), value)
        super().__setitem__(key, value)

    def __delitem__(self, key: str) -> None:
        self.reservations.follow(self[key], None)
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        """Remove and return, releasing the reservation."""
        if key in self:
            self.reservations.follow(self[key], None)
        return super().pop(key, *default)

    def update(self, *args: Any, **kwargs: Any) -> None:
        """Set each pair through __setitem__."""
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def setdefault(self, key: str, default: Any = None) -> Any:
        """Set through __setitem__ when absent."""
        if key not in self:
            self[key] = default
        return self[key]

    def popitem(self) -> tuple[str, DedupRecord]:
        """Remove the last item, releasing its reservation."""
        key, value = super().popitem()
        self.reservations.follow(value, None)
        return key, value

    def clear(self) -> None:
        """Remove everything."""
        super().clear()
        self.reservations.clear()


@dataclass(frozen=True)
class Write:
    """One changelog record a batch produces: the key's final value, or None to delete it."""

    table: str
    partition: int
    key: str
    value: Any


class TableTx(MutableMapping[str, V], Generic[V]):
    """One table within a batch: writes go to the store at once, journaled, and are recorded.

    The store is only ever read by the loop that runs the batch, so writing through is the
    same as a write cache flushed at the end; the journal undoes a failed record's writes.
    Values changed in place are recorded with `touch`.
    """

    def __init__(self, name: str, store: MutableMapping[str, V], state: BatchState) -> None:
        self.name = name
        self.store = store
        self._state = state
        self.dirty: dict[str, int] = {}

    def __getitem__(self, key: str) -> V:
        return self.store[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The value, or `default`."""
        return self.store.get(key, default)

    def __setitem__(self, key: str, value: V) -> None:
        journal = self._state.journal
        journal.note(self.store, key)
        self.store[key] = value
        self.touch(key)

    def __delitem__(self, key: str) -> None:
        self._state.journal.note(self.store, key)
        del self.store[key]
        self.touch(key)

    def touch(self, key: str) -> None:
        """Record that the key's value changed (in place) in the current record's partition."""
        if key not in self.dirty:
            self._state.journal.note(self.dirty, key)
            self.dirty[key] = self._state.partition

    def __iter__(self) -> Iterator[str]:
        return iter(self.store)

    def __len__(self) -> int:
        return len(self.store)

    def __contains__(self, key: object) -> bool:
        return key in self.store


@dataclass
class BatchState:
    """The governor's tables for one batch: each record journaled, each dirty key sent once."""

    stores: Mapping[str, MutableMapping[str, Any]]
    journal: Journal = field(default_factory=Journal)
    partition: int = 0
    _tables: dict[str, TableTx[Any]] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        self._tables = {name: TableTx(name, store, self) for name, store in self.stores.items()}

    def table(self, name: str) -> TableTx[Any]:
        """The named table within this batch."""
        return self._tables[name]

    def begin(self, partition: int) -> None:
        """Start a record of `partition`: its writes can be undone until `commit`."""
        self.partition = partition
        self.journal.begin()

    def commit(self) -> None:
        """Keep the current record's writes."""
        self.journal.commit()

    def rollback(self) -> None:
        """Undo the current record's writes, and forget the keys it alone made dirty."""
        self.journal.rollback()

    def writes(self) -> list[Write]:
        """Every key the batch changed, with its final value (None: deleted); then reset."""
        out = []
        for name, tx in self._tables.items():
            for key, partition in tx.dirty.items():
                value = tx.store.get(key, MISSING)
                out.append(Write(name, partition, key, None if value is MISSING else value))
            tx.dirty.clear()
        return out
