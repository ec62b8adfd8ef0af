"""Bulk ingestion over HTTP: `python -m bench.bulk [--json PATH] [--repeat 3] [--batches N]`.

Starts an embedded broker (LAPVERSE_EMBEDDED_BROKER), one `lapverse worker` and one
`lapverse gateway`, configures 8 tenants through the admin API, then a few concurrent clients
POST batches of 100 NOOP tasks to /api/v2/tasks:batch, each client sending its next batch when
the 207 of the last one is in (closed loop). Each repetition measures:

- `sync_tasks_per_s`: batches without `Prefer`, each answer waiting for its decisions (the
  tasks answered 202 per second, first send to last answer);
- `tasks_per_s`, ingestion: batches sent with `Prefer: respond-async`, so the gateway answers
  once the batch is written to Kafka; the tasks answered 202 per second;
- `decided_per_s`: the same tasks from the first send until the gateway has read the decision
  of every one of them (the worker's admission pace).

Each run starts with the worker idle: the tasks of the run before have finished.

Each figure is the median, min and max over the repetitions. Writes a JSON document (--json)
and prints a summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.figures import spread
from bench.latency import (
    Client,
    Tenant,
    configure_tenants,
    cpu_snapshot,
    cpu_use,
    first_decisions,
    quantiles,
    worker_and_gateway,
)
from bench.procs import stop
from bench.profile import record
from bench.profile import summarise as summarise_profile
from bench.run import _dump_logs, _engine, _git_revision, machine_facts
from bench.workload import pick_tenants
from lapverse_streams.broker.embedded import free_port
from lapverse_streams.broker.engines import embedded_broker
from lapverse_streams.domain import idempotency
from lapverse_streams.settings import Settings

RESULTS_PATH = Path(__file__).resolve().parent / "bulk-results.json"
BATCH_SIZE = 100  # the most POST /api/v2/tasks:batch takes
TARGET_PER_S = 5_000  # spec section 8
OUTCOMES = ("accepted", "pending", "rejected", "error")


# ---------------------------------------------------------------- pure parts (unit-tested)


def batch_body(tenant_id: str, prefix: str, size: int = BATCH_SIZE) -> bytes:
    """A batch of `size` NOOP tasks with the keys `<prefix>-000`, `<prefix>-001`, ..."""
    tasks = [
        {"idempotencyKey": f"{prefix}-{i:03d}", "type": "NOOP", "tenant": tenant_id,
         "costCenter": "bench"}
        for i in range(size)
    ]  # fmt: skip
    return orjson.dumps(tasks)


def outcomes_of(http_status: int, body: bytes, size: int) -> Counter[str]:
    """How a batch's tasks were answered: accepted, pending, rejected (a decided 4xx/5xx), error.

    A whole-request error (anything but a 207 with one result per task) makes every task an error.
    """
    try:
        parsed: Any = orjson.loads(body) if http_status == 207 else None
    except orjson.JSONDecodeError:
        parsed = None
    results = parsed.get("results") if isinstance(parsed, dict) else None
    if not isinstance(results, list) or len(results) != size:
        return Counter({"error": size})
    counts: Counter[str] = Counter()
    for result in results:
        if result.get("status") == 202:
            counts[str(result["body"]["status"])] += 1  # accepted or pending
        else:
            counts["rejected"] += 1
    return counts


@dataclass
class Batch:
    """One POST of a repetition: how long its 207 took and how its tasks were answered."""

    tenant: str
    last_task_id: str  # decided last among the batch's tasks (they share a partition, in order)
    latency_s: float
    http_status: int | None
    outcomes: Counter[str]


def summarise(batches: Sequence[Batch], elapsed_s: float, size: int) -> dict[str, Any]:
    """A closed loop's figures: tasks/s answered 202, outcomes, batch latency."""
    totals: Counter[str] = Counter()
    for batch in batches:
        totals.update(batch.outcomes)
    ingested = totals["accepted"] + totals["pending"]
    return {
        "batches": len(batches),
        "tasks": len(batches) * size,
        "elapsed_s": round(elapsed_s, 3),
        "tasks_per_s": round(ingested / elapsed_s, 1) if elapsed_s > 0 else None,
        "outcomes": {name: totals.get(name, 0) for name in OUTCOMES},
        "http_statuses": {
            str(code): n for code, n in sorted(Counter(b.http_status or 0 for b in batches).items())
        },
        "batch_latency_ms": quantiles([b.latency_s for b in batches], (50, 99, 100), 1000),
    }


def combine(repetitions: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The headline figures over the repetitions: median, min and max of each."""
    ingest = [r["ingest"] for r in repetitions]
    sync = [r["sync"] for r in repetitions]
    return {
        "tasks_per_s": spread([r["tasks_per_s"] for r in ingest]),
        "decided_per_s": spread([r["decided_per_s"] for r in repetitions]),
        "sync_tasks_per_s": spread([r["tasks_per_s"] for r in sync]),
        "batch_latency_ms": {
            mode: {q: spread([r["batch_latency_ms"][q] for r in runs]) for q in ("p50", "p99")}
            for mode, runs in (("ingest", ingest), ("sync", sync))
        },
    }


# ---------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.bulk", description=__doc__)
    parser.add_argument("--json", type=Path, default=RESULTS_PATH, help="where to write results")
    parser.add_argument("--repeat", type=int, default=3, help="repetitions (figures: median)")
    parser.add_argument(
        "--batches", type=int, default=200, help="batches of 100 tasks per repetition"
    )
    parser.add_argument(
        "--sync-batches", type=int, default=50, help="batches of the run that waits for decisions"
    )
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--tenants", type=int, default=8, help="tenants to spread batches over")
    parser.add_argument("--warmup", type=int, default=20, help="batches sent before measuring")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each wait, s")
    parser.add_argument(
        "--profile", type=Path, help="py-spy the gateway and worker in repetition 1, into DIR"
    )
    args = parser.parse_args(argv)
    if min(args.repeat, args.batches, args.sync_batches, args.clients, args.tenants) < 1:
        parser.error("--repeat, --batches, --sync-batches, --clients, --tenants must be positive")
    return args


async def post_batch(
    session: aiohttp.ClientSession, base: str, tenant: Tenant, prefix: str, prefer: str | None
) -> Batch:
    """POST one batch of the tenant's tasks and note how long its 207 took and what it said."""
    headers = {
        "Authorization": f"Bearer {tenant.api_key}",
        "X-Tenant-ID": tenant.tenant_id,
        "Content-Type": "application/json",
        **({"Prefer": prefer} if prefer else {}),
    }
    body = batch_body(tenant.tenant_id, prefix)
    last = idempotency.task_id(tenant.tenant_id, f"{prefix}-{BATCH_SIZE - 1:03d}")
    started = time.perf_counter()
    try:
        async with session.post(f"{base}/api/v2/tasks:batch", data=body, headers=headers) as r:
            raw = await r.read()
        outcomes = outcomes_of(r.status, raw, BATCH_SIZE)
        return Batch(tenant.tenant_id, last, time.perf_counter() - started, r.status, outcomes)
    except (aiohttp.ClientError, TimeoutError):
        elapsed = time.perf_counter() - started
        return Batch(tenant.tenant_id, last, elapsed, None, Counter({"error": BATCH_SIZE}))


async def closed_loop(
    session: aiohttp.ClientSession,
    base: str,
    tenants: list[Tenant],
    batches: int,
    clients: int,
    prefix: str,
    prefer: str | None = None,
) -> tuple[list[Batch], float]:
    """`clients` senders share `batches` batches, round-robin over the tenants; the wall time."""
    numbers: Iterator[int] = iter(range(batches))
    done: list[Batch] = []

    async def sender() -> None:
        for n in numbers:  # shared: each batch number is taken by exactly one sender
            tenant = tenants[n % len(tenants)]
            done.append(await post_batch(session, base, tenant, f"{prefix}-{n:05d}", prefer))

    started = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(clients)))
    return done, time.perf_counter() - started


DECIDED = frozenset({"accepted", "rejected", "running", "completed", "failed"})
FINISHED = frozenset({"rejected", "completed", "failed"})


async def wait_for(
    session: aiohttp.ClientSession,
    base: str,
    tenants: list[Tenant],
    batches: list[Batch],
    statuses: frozenset[str],
    timeout_s: float,
) -> None:
    """Poll GET /api/v2/tasks/{id} of each batch's last task until its status is in statuses."""
    auth = {
        t.tenant_id: {"Authorization": f"Bearer {t.api_key}", "X-Tenant-ID": t.tenant_id}
        for t in tenants
    }
    waiting = list(batches)
    deadline = time.monotonic() + timeout_s
    while waiting:
        for batch in list(waiting):
            url = f"{base}/api/v2/tasks/{batch.last_task_id}"
            async with session.get(url, headers=auth[batch.tenant]) as r:
                if r.status == 200 and (await r.json())["status"] in statuses:
                    waiting.remove(batch)
        if time.monotonic() > deadline:
            raise TimeoutError(f"{len(waiting)} batches not {sorted(statuses)} after {timeout_s} s")
        await asyncio.sleep(0.05)


async def repetition(
    session: aiohttp.ClientSession,
    base: str,
    tenants: list[Tenant],
    args: argparse.Namespace,
    prefix: str,
) -> dict[str, Any]:
    """A run that waits for decisions, then one with respond-async; each on an idle worker.

    The worker is idle again when the last task of every batch has finished.
    """
    batches, elapsed_s = await closed_loop(
        session, base, tenants, args.sync_batches, args.clients, f"{prefix}s"
    )
    sync = summarise(batches, elapsed_s, BATCH_SIZE)
    await wait_for(session, base, tenants, batches, FINISHED, args.timeout)
    started = time.perf_counter()
    batches, elapsed_s = await closed_loop(
        session, base, tenants, args.batches, args.clients, f"{prefix}a", "respond-async"
    )
    await wait_for(session, base, tenants, batches, DECIDED, args.timeout)
    decided_s = time.perf_counter() - started
    ingest = summarise(batches, elapsed_s, BATCH_SIZE)
    await wait_for(session, base, tenants, batches, FINISHED, args.timeout)
    return {
        "ingest": ingest,
        "decided_per_s": round(ingest["tasks"] / decided_s, 1),
        "decided_after_s": round(decided_s, 3),
        "sync": sync,
    }


async def measure(
    args: argparse.Namespace, broker_url: str, broker_pid: int | None, work_dir: Path
) -> dict[str, Any]:
    """Worker and gateway up, tenants configured, a warm-up, then the repetitions."""
    load_before = os.getloadavg()[0]
    revision = _git_revision()
    repetitions: list[dict[str, Any]] = []
    async with worker_and_gateway("bulk", broker_url, work_dir, args.timeout) as stack:
        settings, run_id = stack.settings, stack.run_id
        admin_token, base = stack.admin_token, stack.base
        worker, gw = stack.worker, stack.gateway
        connector = aiohttp.TCPConnector(limit=args.clients * 2)
        timeout = aiohttp.ClientTimeout(total=args.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            ids = pick_tenants(args.tenants, settings.topic_partitions)
            tenants = await configure_tenants(session, base, admin_token, ids, args.timeout)
            await first_decisions(Client(session, base, tenants), run_id, args.timeout)
            print(f"ready; warming up with {args.warmup} batches", flush=True)
            await closed_loop(session, base, tenants, args.warmup, args.clients, f"w-{run_id}")
            pids = {"broker": broker_pid, "worker": worker.pid, "gateway": gw.pid}
            for n in range(1, args.repeat + 1):
                sampled = (gw, worker) if args.profile and n == 1 else ()
                profilers = [
                    await record(c, args.profile / f"{c.name}.txt", work_dir) for c in sampled
                ]
                before, started = cpu_snapshot(pids), time.perf_counter()
                try:
                    figures = await repetition(session, base, tenants, args, f"r{n}-{run_id}")
                finally:
                    for profiler in profilers:  # py-spy writes its output on SIGINT
                        await stop(profiler, sig=signal.SIGINT)
                wall_s = time.perf_counter() - started
                figures["cpu_cores_used"] = cpu_use(before, cpu_snapshot(pids), wall_s)
                repetitions.append(figures)
                print(f"repetition {n} of {args.repeat}: {brief(figures)}", flush=True)
    profile = (
        {c: summarise_profile(args.profile / f"{c}.txt") for c in ("gateway", "worker")}
        if args.profile
        else {}
    )
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": revision,
        "engine": settings.embedded_broker,
        "broker": _engine(),
        **combine(repetitions),
        "target_per_s": TARGET_PER_S,
        "batch_size": BATCH_SIZE,
        "batches": args.batches,
        "sync_batches": args.sync_batches,
        "clients": args.clients,
        "tenants": args.tenants,
        "repeat": args.repeat,
        "decision_timeout_ms": settings.decision_timeout_ms,
        "repetitions": repetitions,
        "profile": profile,
        "machine": machine_facts() | {"loadavg_1m_before": round(load_before, 2)},
    }


def brief(r: dict[str, Any]) -> str:
    """One repetition in a line."""
    ingest, sync = r["ingest"], r["sync"]
    return (
        f"ingest {ingest['tasks_per_s']:,.0f}/s {ingest['outcomes']} (batch p50/p99 "
        f"{ingest['batch_latency_ms']['p50']}/{ingest['batch_latency_ms']['p99']} ms), "
        f"all decided {r['decided_per_s']:,.0f}/s, waiting for decisions "
        f"{sync['tasks_per_s']:,.0f}/s {sync['outcomes']} (batch p50/p99 "
        f"{sync['batch_latency_ms']['p50']}/{sync['batch_latency_ms']['p99']} ms)"
    )


def report(result: dict[str, Any]) -> str:
    """A few lines: the headline figures with their spread, and each repetition's."""
    lines = [
        f"  {result['broker']}, git {result['git']}, {result['machine']['nproc']} CPUs, "
        f"{result['clients']} clients x {result['batch_size']}-task batches, "
        f"{result['batches']} + {result['sync_batches']} batches per repetition",
    ]
    for key, label in (
        ("tasks_per_s", "bulk ingestion (respond-async)"),
        ("decided_per_s", "  ... until all decided"),
        ("sync_tasks_per_s", "bulk, waiting for decisions"),
    ):
        f = result[key]
        lines.append(
            f"  {label:<32} {f['median']:>8,.0f}/s  (min {f['min']:,.0f}, max {f['max']:,.0f}; "
            f"median of {f['n']})"
        )
    lines.append(f"  target: bulk ingestion >= {TARGET_PER_S:,}/s")
    for n, r in enumerate(result["repetitions"], 1):
        lines.append(f"    {n}: {brief(r)}; cores {r['cpu_cores_used']}")
    for name, summary in result["profile"].items():
        lines += [f"\n  {name} (py-spy, repetition 1):", summary]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Start the broker, measure, stop everything, write the JSON and print the figures."""
    args = parse_args(argv)
    engine = Settings.from_env().embedded_broker
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lapverse-bulk-") as tmp:
        work_dir = Path(tmp)
        with embedded_broker(engine, free_port(), log_path=work_dir / "broker.log") as broker:
            print(f"broker {broker.url} (pid {broker.pid}); logs in {work_dir}", flush=True)
            try:
                result = asyncio.run(measure(args, broker.url, broker.pid, work_dir))
            except BaseException:
                _dump_logs(work_dir)
                raise
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(report(result))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
