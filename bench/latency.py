"""Gateway latency at fixed open-loop rates: `python -m bench.latency [--rates 200,500]`.

Starts an embedded broker, one `lapverse worker` and one `lapverse gateway`, configures
tenants through the admin API, then POSTs NOOP tasks on an open-loop schedule and measures
each request from the client's send to the gateway's answer. The request and decision
records read back from Kafka split every decided request's latency into three parts.
Writes bench/latency-results.json (one entry per broker engine) and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import os
import secrets
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer

from bench.phases import running
from bench.procs import Child, spawn_gateway, spawn_worker, stop
from bench.profile import record
from bench.profile import summarise as summarise_profile
from bench.run import _dump_logs, _engine, _git_revision, machine_facts
from bench.workload import pick_tenants
from lapverse_streams.broker.assign import assign_all, at_fetch_highwater
from lapverse_streams.broker.embedded import free_port
from lapverse_streams.broker.engines import embedded_broker
from lapverse_streams.broker.topics import ensure_topics
from lapverse_streams.events import topics
from lapverse_streams.settings import Settings

RESULTS_PATH = Path(__file__).resolve().parent / "latency-results.json"
KEPT_UP_LAG_MS = 10.0  # the generator kept up when the p99 of its send lag is below this
DECISION_TYPES = (b"io.lapverse.task.accepted.v1", b"io.lapverse.task.rejected.v1")
OUTCOMES = ("accepted", "rejected", "pending", "error")
QS = (50, 90, 99, 100)  # latency percentiles; 100 is the maximum
PARTS = ("gateway_ms", "kafka_governor_ms", "answer_ms")


# ---------------------------------------------------------------- pure parts (unit-tested)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile by nearest rank: the smallest value with q % of values at or below.

    None for no values. Nearest rank never invents a value: p99 of 100 samples is the 99th.
    """
    if not 0 < q <= 100:
        raise ValueError("q must be in (0, 100]")
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(q / 100 * len(ordered))
    return ordered[max(rank, 1) - 1]


def schedule(rate_per_s: float, duration_s: float) -> list[float]:
    """Open-loop send times, in seconds from the start: one every 1/rate, fixed in advance."""
    if rate_per_s <= 0 or duration_s <= 0:
        raise ValueError("rate and duration must be positive")
    return [i / rate_per_s for i in range(round(rate_per_s * duration_s))]


@dataclass(frozen=True)
class Parts:
    """Where a decided request's time went, in milliseconds; the three add up to its latency."""

    gateway_ms: float  # HTTP + gateway before produce: request record timestamp - client send
    kafka_governor_ms: float  # Kafka + governor: decision record ts - request record ts
    answer_ms: float  # decision read-back + answer: client receive - decision record ts


def split(sent_ms: float, request_ts_ms: float, decision_ts_ms: float, received_ms: float) -> Parts:
    """Split send -> receive at the two Kafka record timestamps (all wall clock, ms)."""
    return Parts(
        gateway_ms=request_ts_ms - sent_ms,
        kafka_governor_ms=decision_ts_ms - request_ts_ms,
        answer_ms=received_ms - decision_ts_ms,
    )


def body_status(http_status: int, body: bytes) -> str:
    """accepted / pending (the 202 bodies), rejected (a decision's problem), or other[: why]."""
    try:
        parsed: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return "other"
    if not isinstance(parsed, dict):
        return "other"
    status = parsed.get("status")
    if http_status == 202 and status in ("accepted", "pending"):
        return str(status)
    if 400 <= http_status < 500 and "taskId" in parsed:  # the governor's rejection, rendered
        return "rejected"
    problem = parsed.get("type")  # problem+json: name the problem (e.g. broker-unavailable)
    return f"other: {http_status} {str(problem).rsplit('/', 1)[-1]}" if problem else "other"


@dataclass
class Sample:
    """One request: when it was due and sent, when and how it was answered."""

    key: str  # its Idempotency-Key (unique)
    tenant: str
    scheduled_s: float  # due time, seconds from the run's start
    lag_s: float | None = None  # actual send - due time
    sent_ms: float | None = None  # wall clock at the send, ms (sub-ms precision)
    latency_s: float | None = None  # send -> answer read (monotonic clock)
    http_status: int | None = None
    body: str = ""  # body_status(), or "error: <exception>" when no answer came

    @property
    def outcome(self) -> str:
        """accepted / rejected (both decided), pending, or error."""
        return self.body if self.body in ("accepted", "rejected", "pending") else "error"

    @property
    def received_ms(self) -> float | None:
        """Wall clock at the answer, ms: the send plus the monotonic latency."""
        if self.sent_ms is None or self.latency_s is None:
            return None
        return self.sent_ms + self.latency_s * 1000


def quantiles(
    values: Sequence[float], qs: Sequence[float] = QS, scale: float = 1.0
) -> dict[str, float | None]:
    """{"p50": ..., "max": ...} of values times scale, rounded to 0.01 (q = 100 is "max")."""
    out: dict[str, float | None] = {}
    for q in qs:
        value = percentile(values, q)
        out["max" if q == 100 else f"p{q:g}"] = None if value is None else round(value * scale, 2)
    return out


def summarise(
    samples: Sequence[Sample],
    rate_per_s: float,
    duration_s: float,
    request_ts: dict[str, int],
    decision_ts: dict[str, int],
) -> dict[str, Any]:
    """The figures of one rate: latency, outcomes, the generator's lag and the breakdown."""
    sent = [s for s in samples if s.sent_ms is not None and s.lag_s is not None]
    answered = [s for s in sent if s.latency_s is not None and s.http_status is not None]
    decided = [s for s in answered if s.outcome in ("accepted", "rejected")]
    outcomes = Counter(s.outcome for s in samples)
    lags = [s.lag_s for s in sent if s.lag_s is not None]
    send_times = [s.scheduled_s + lag for s, lag in zip(sent, lags, strict=True)]
    span_s = max(send_times) - min(send_times) if send_times else 0.0
    lag_ms = quantiles(lags, (50, 99, 100), scale=1000)
    parts: list[Parts] = []
    for s in decided:
        req, dec, received = request_ts.get(s.key), decision_ts.get(s.key), s.received_ms
        if req is not None and dec is not None and received is not None and s.sent_ms is not None:
            parts.append(split(s.sent_ms, req, dec, received))
    breakdown = {name: quantiles([getattr(p, name) for p in parts], (50, 99)) for name in PARTS}
    return {
        "rate_per_s": rate_per_s,
        "duration_s": duration_s,
        "scheduled": len(samples),
        "sent": len(sent),
        "achieved_send_rate_per_s": round((len(sent) - 1) / span_s, 1) if span_s > 0 else None,
        "send_lag_ms": lag_ms,
        "generator_kept_up": lag_ms["p99"] is not None and lag_ms["p99"] <= KEPT_UP_LAG_MS,
        "outcomes": {name: outcomes.get(name, 0) for name in OUTCOMES},
        "decided": len(decided),
        "http_statuses": {
            str(code): n for code, n in sorted(Counter(s.http_status for s in answered).items())
        },
        "errors": dict(Counter(s.body for s in samples if s.outcome == "error").most_common(5)),
        "latency_ms": quantiles(
            [s.latency_s for s in answered if s.latency_s is not None], QS, 1000
        ),
        "latency_decided_ms": quantiles(
            [s.latency_s for s in decided if s.latency_s is not None], QS, 1000
        ),
        "breakdown": {"matched": len(parts), **breakdown},
    }


def combine(values: Sequence[Any]) -> Any:
    """Repetitions of the same figures in one: each number as its median, min and max.

    Dicts are combined key by key, booleans with all(), anything else is the first value.
    """
    first = next((v for v in values if v is not None), None)
    if isinstance(first, bool):
        return all(values)
    if isinstance(first, int | float):
        nums = [v for v in values if isinstance(v, int | float)]
        return {"median": statistics.median(nums), "min": min(nums), "max": max(nums)}
    if isinstance(first, dict):
        dicts = [v for v in values if isinstance(v, dict)]
        keys = list(dict.fromkeys(k for d in dicts for k in d))
        return {k: combine([d.get(k) for d in dicts]) for k in keys}
    return first


# ---------------------------------------------------------------- the run


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.latency", description=__doc__)
    parser.add_argument(
        "--rates", default="200,500", help="request rates to measure, req/s, comma-separated"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per rate")
    parser.add_argument(
        "--repeat", type=int, default=3, help="repetitions of every rate (figures: median)"
    )
    parser.add_argument("--tenants", type=int, default=8, help="tenants to spread requests over")
    parser.add_argument("--warmup", type=float, default=5.0, help="seconds of warm-up traffic")
    parser.add_argument("--pause", type=float, default=3.0, help="seconds between rates")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each wait, s")
    parser.add_argument(
        "--output", type=Path, default=RESULTS_PATH, help="JSON file; this engine's entry"
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="py-spy the worker and the gateway into this directory during the first run "
        "of the highest rate (collapsed stacks: worker.txt, gateway.txt)",
    )
    args = parser.parse_args(argv)
    args.rate_list = [float(r) for r in args.rates.split(",") if r.strip()]
    if not args.rate_list or any(r <= 0 for r in args.rate_list):
        parser.error("--rates needs positive numbers")
    return args


@dataclass(frozen=True)
class Tenant:
    """A configured tenant, its API key and its request body (pre-encoded)."""

    tenant_id: str
    api_key: str
    body: bytes


class Client:
    """One aiohttp session against the gateway."""

    def __init__(self, session: aiohttp.ClientSession, base: str, tenants: list[Tenant]) -> None:
        self.session = session
        self.base = base
        self.tenants = {t.tenant_id: t for t in tenants}

    async def post(self, sample: Sample, start: float) -> None:
        """POST sample's task and note the send, the answer and its status."""
        tenant = self.tenants[sample.tenant]
        headers = {
            "Authorization": f"Bearer {tenant.api_key}",
            "X-Tenant-ID": tenant.tenant_id,
            "Idempotency-Key": sample.key,
            "Content-Type": "application/json",
        }
        sent = time.perf_counter()
        sample.lag_s = sent - (start + sample.scheduled_s)
        sample.sent_ms = time.time_ns() / 1e6
        try:
            async with self.session.post(
                f"{self.base}/api/v2/tasks", data=tenant.body, headers=headers
            ) as response:
                raw = await response.read()
                sample.latency_s = time.perf_counter() - sent
                sample.http_status = response.status
                sample.body = body_status(response.status, raw)
        except (aiohttp.ClientError, TimeoutError) as exc:
            sample.latency_s = time.perf_counter() - sent
            sample.body = f"error: {type(exc).__name__}"


async def open_loop(
    client: Client, rate_per_s: float, duration_s: float, prefix: str
) -> list[Sample]:
    """Send on the fixed schedule, each request its own task, then await every answer."""
    tenant_ids = list(client.tenants)
    samples = [
        Sample(f"{prefix}-{i:07d}", tenant_ids[i % len(tenant_ids)], due)
        for i, due in enumerate(schedule(rate_per_s, duration_s))
    ]
    tasks: list[asyncio.Task[None]] = []
    start = time.perf_counter() + 0.05
    for sample in samples:
        delay = start + sample.scheduled_s - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(client.post(sample, start)))
    await asyncio.gather(*tasks)
    return samples


async def wait_ready(url: str, child: Child, timeout_s: float) -> None:
    """Poll a /readyz until it answers 200; raise if the child exits or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while True:
            if not child.alive():
                raise RuntimeError(f"{child.name} exited ({child.process.returncode})")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                async with session.get(url) as response:
                    if response.status == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(f"{child.name} not ready after {timeout_s} s")
            await asyncio.sleep(0.2)


async def configure_tenants(
    session: aiohttp.ClientSession, base: str, admin_token: str, ids: list[str], timeout_s: float
) -> list[Tenant]:
    """PUT each tenant (high MRR and rate limit) and POST an API key for it."""
    auth = {"Authorization": f"Bearer {admin_token}"}
    body = {"mrr": 1e9, "owner": "bench", "rateLimitPerS": 1_000_000, "burst": 1_000_000}
    tenants = []
    for tenant_id in ids:
        async with session.put(
            f"{base}/admin/v1/tenants/{tenant_id}", json=body, headers=auth
        ) as r:
            if r.status not in (200, 201):
                raise RuntimeError(f"PUT tenant {tenant_id}: {r.status} {await r.text()}")
        deadline = time.monotonic() + timeout_s
        while True:
            async with session.post(
                f"{base}/admin/v1/tenants/{tenant_id}/api-keys", headers=auth
            ) as r:
                if r.status == 201:
                    api_key = str((await r.json())["apiKey"])
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"API key for {tenant_id}: {r.status} {await r.text()}")
            await asyncio.sleep(0.2)
        task = {"type": "NOOP", "tenant": tenant_id, "costCenter": "bench"}
        tenants.append(Tenant(tenant_id, api_key, orjson.dumps(task)))
    return tenants


async def first_decisions(client: Client, run_id: str, timeout_s: float) -> None:
    """One request per tenant until each is accepted: the worker knows every tenant."""
    for tenant_id in client.tenants:
        deadline = time.monotonic() + timeout_s
        for attempt in range(1_000_000):
            sample = Sample(f"ready-{run_id}-{tenant_id}-{attempt}", tenant_id, 0.0)
            await client.post(sample, time.perf_counter())
            if sample.outcome == "accepted":
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{tenant_id}: no accepted decision ({sample.body})")
            await asyncio.sleep(0.5)


async def read_back(
    settings: Settings, keys: set[str], timeout_s: float, idle_s: float = 5.0
) -> tuple[dict[str, int], dict[str, int]]:
    """Kafka timestamps of the request and the decision of each key (group-less, every partition).

    Reads until every key has both, or the reader is caught up and nothing new came for
    idle_s (a request that never reached Kafka has no record), or timeout_s passes.
    """
    requests_topic = settings.topic(topics.TASKS)
    decisions_topic = settings.topic(topics.TASK_DECISIONS)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.bootstrap_servers,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level=settings.isolation_level,
    )
    await consumer.start()
    requests: dict[str, int] = {}
    decisions: dict[str, int] = {}
    try:
        partitions = await assign_all(consumer, [requests_topic, decisions_topic])
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + timeout_s
        last_new = time.monotonic()
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for tp, records in batches.items():
                into = requests if tp.topic == requests_topic else decisions
                for record in records:
                    key = record_key(tp.topic == requests_topic, record.value)
                    if key in keys and (key not in into or record.timestamp < into[key]):
                        into[key] = record.timestamp
                        last_new = time.monotonic()
            if len(requests) == len(keys) and len(decisions) == len(keys):
                break
            if time.monotonic() - last_new > idle_s and await at_fetch_highwater(
                consumer, partitions
            ):
                break
    finally:
        await consumer.stop()
    return requests, decisions


def record_key(is_request: bool, value: bytes | None) -> str | None:
    """The idempotency key of a request (its CloudEvent id) or of a task decision (data)."""
    if not value:
        return None
    if not is_request and not any(t in value for t in DECISION_TYPES):
        return None
    event: Any = orjson.loads(value)
    if is_request:
        return str(event.get("id"))
    return str(event.get("data", {}).get("idempotencyKey"))


def cpu_s(pid: int | None) -> float | None:
    """User + system CPU seconds a process has used (None when it is gone)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Stack:
    """One worker and one gateway on a fresh topic prefix, both ready."""

    settings: Settings
    run_id: str
    admin_token: str
    worker: Child
    gateway: Child

    @property
    def base(self) -> str:
        """The gateway's base URL."""
        return f"http://127.0.0.1:{self.settings.gateway_port}"


@contextlib.asynccontextmanager
async def worker_and_gateway(
    name: str, broker_url: str, work_dir: Path, timeout_s: float
) -> AsyncIterator[Stack]:
    """Topics under `<name>-<run id>.`, a worker and a gateway (at least once), both ready;
    both stopped on exit."""
    run_id = secrets.token_hex(3)
    admin_token = secrets.token_hex(16)
    settings = dataclasses.replace(
        Settings.from_env(),
        broker_url=broker_url,
        topic_prefix=f"{name}-{run_id}.",
        gateway_port=free_port(),
        worker_web_port=free_port(),
        processing_guarantee="at_least_once",
    )
    await ensure_topics(settings)
    worker = await spawn_worker(settings, "worker", work_dir, web_port=settings.worker_web_port)
    async with running(worker), running(await spawn_gateway(settings, admin_token, work_dir)) as gw:
        stack = Stack(settings, run_id, admin_token, worker, gw)
        await wait_ready(f"{stack.base}/readyz", gw, timeout_s)
        await wait_ready(f"http://127.0.0.1:{settings.worker_web_port}/readyz", worker, timeout_s)
        yield stack


def cpu_snapshot(pids: dict[str, int | None]) -> dict[str, float | None]:
    """CPU seconds of each named process and of this one (the load generator)."""
    snapshot = {name: cpu_s(pid) for name, pid in pids.items()}
    snapshot["bench client"] = time.process_time()
    return snapshot


def cpu_use(
    before: dict[str, float | None], after: dict[str, float | None], wall_s: float
) -> dict[str, float | None]:
    """Cores used by each process over wall_s (1.0 = one core busy all the time)."""
    out: dict[str, float | None] = {}
    for name, start in before.items():
        end = after.get(name)
        out[name] = (
            None
            if start is None or end is None or wall_s <= 0
            else round((end - start) / wall_s, 2)
        )
    return out


async def measure(
    args: argparse.Namespace, broker_url: str, broker_pid: int | None, work_dir: Path
) -> dict[str, Any]:
    """Worker and gateway up, tenants configured, warm-up, then each rate in turn."""
    load_before = os.getloadavg()[0]  # other work on the machine skews the figures
    revision = _git_revision()
    async with worker_and_gateway("latency", broker_url, work_dir, args.timeout) as stack:
        settings, run_id = stack.settings, stack.run_id
        admin_token, base = stack.admin_token, stack.base
        worker, gateway = stack.worker, stack.gateway
        connector = aiohttp.TCPConnector(limit=5000)
        timeout = aiohttp.ClientTimeout(total=60)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            ids = pick_tenants(args.tenants, settings.topic_partitions)
            tenants = await configure_tenants(session, base, admin_token, ids, args.timeout)
            client = Client(session, base, tenants)
            await first_decisions(client, run_id, args.timeout)
            print(f"ready; warming up for {args.warmup:g} s", flush=True)
            if args.warmup > 0:
                await open_loop(client, args.rate_list[0], args.warmup, f"warm-{run_id}")
            pids = {"broker": broker_pid, "worker": worker.pid, "gateway": gateway.pid}
            runs: list[tuple[float, list[Sample], dict[str, float | None]]] = []
            for repetition in range(1, args.repeat + 1):
                for rate in args.rate_list:
                    await asyncio.sleep(args.pause)
                    print(
                        f"{rate:g} req/s for {args.duration:g} s "
                        f"({repetition} of {args.repeat}) ...",
                        flush=True,
                    )
                    sampled = args.profile is not None and repetition == 1
                    sampled = sampled and rate == max(args.rate_list)
                    profilers = (
                        await sample(args.profile, [worker, gateway], work_dir) if sampled else []
                    )
                    before, started = cpu_snapshot(pids), time.monotonic()
                    prefix = f"lat-{run_id}-{repetition}-{rate:g}"
                    try:
                        samples = await open_loop(client, rate, args.duration, prefix)
                    finally:
                        for profiler in profilers:  # py-spy writes its output on SIGINT
                            await stop(profiler, sig=signal.SIGINT)
                    cores = cpu_use(before, cpu_snapshot(pids), time.monotonic() - started)
                    runs.append((rate, samples, cores))
                    print(f"  {dict(Counter(s.outcome for s in samples))}", flush=True)
    keys = {s.key for _, samples, _ in runs for s in samples}
    print(f"reading back {len(keys)} requests and their decisions ...", flush=True)
    request_ts, decision_ts = await read_back(settings, keys, args.timeout)
    figures = []
    for rate in args.rate_list:
        repetitions = []
        for run_rate, samples, cores in runs:
            if run_rate == rate:
                summary = summarise(samples, rate, args.duration, request_ts, decision_ts)
                summary["cpu_cores_used"] = cores
                repetitions.append(summary)
        medians = combine(repetitions) | {"rate_per_s": rate, "duration_s": args.duration}
        figures.append(medians | {"repetitions": repetitions})
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": revision,
        "engine": settings.embedded_broker,
        "broker": _engine(),
        "rates": args.rate_list,
        "duration_s": args.duration,
        "repeat": args.repeat,
        "tenants": args.tenants,
        "warmup_s": args.warmup,
        "decision_timeout_ms": settings.decision_timeout_ms,
        "figures": figures,
        "machine": machine_facts()
        | {"loadavg_1m_before": round(load_before, 2), "aiohttp": version("aiohttp")},
    }


async def sample(directory: Path, children: list[Child], work_dir: Path) -> list[Child]:
    """Start py-spy on each child, into directory/<name>.txt (the directory exists)."""
    return [await record(c, directory / f"{c.name}.txt", work_dir) for c in children]


def print_table(result: dict[str, Any]) -> None:
    """One line per rate (medians of the repetitions), the breakdown, the CPU used."""
    print(
        f"\n  {result['broker']}, git {result['git']}, {result['machine']['nproc']} CPUs, "
        f"median of {result['repeat']} x {result['duration_s']:g} s per rate"
    )
    print(
        f"  {'rate':>5} {'sent/s':>7} {'lag p99':>8} {'decided':>8} {'pending':>8} "
        f"{'errors':>7} {'p50':>7} {'p90':>7} {'p99':>7} {'max':>7}  {'p99 min-max':>14}  (ms)"
    )
    for f in result["figures"]:
        lat, out = f["latency_ms"], f["outcomes"]
        print(
            f"  {f['rate_per_s']:>5g} {_med(f['achieved_send_rate_per_s']):>7} "
            f"{_med(f['send_lag_ms']['p99']):>8} {_med(f['decided']):>8} "
            f"{_med(out['pending']):>8} {_med(out['error']):>7} {_med(lat['p50']):>7} "
            f"{_med(lat['p90']):>7} {_med(lat['p99']):>7} {_med(lat['max']):>7}  "
            f"{_spread(lat['p99']):>14}"
        )
    print("\n  decided requests, where the time went (ms, p50 / p99, medians):")
    print(
        f"  {'rate':>5} {'matched':>8} {'HTTP+gateway':>15} {'Kafka+governor':>16} {'answer':>15}"
    )
    for f in result["figures"]:
        b = f["breakdown"]
        cells = [f"{_med(b[n]['p50'])} / {_med(b[n]['p99'])}" for n in PARTS]
        print(
            f"  {f['rate_per_s']:>5g} {_med(b['matched']):>8} {cells[0]:>15} {cells[1]:>16} "
            f"{cells[2]:>15}"
        )
    print("\n  CPU cores used while each rate ran (medians):")
    for f in result["figures"]:
        used = ", ".join(f"{k} {_med(v)}" for k, v in f["cpu_cores_used"].items())
        print(f"  {f['rate_per_s']:>5g}  {used}")
    print()


def _med(figure: dict[str, float] | None) -> str:
    value = figure["median"] if figure else None
    return str(value) if isinstance(value, int) else _num(value)


def _spread(figure: dict[str, float] | None) -> str:
    return f"{figure['min']:.0f}-{figure['max']:.0f}" if figure else "n/a"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def main(argv: list[str] | None = None) -> int:
    """Start the broker, measure, stop everything, write this engine's entry and report."""
    args = parse_args(argv)
    engine = Settings.from_env().embedded_broker
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lapverse-latency-") as tmp:
        work_dir = Path(tmp)
        broker = embedded_broker(engine, free_port(), log_path=work_dir / "broker.log")
        with broker:
            print(f"broker {broker.url} (pid {broker.pid}); logs in {work_dir}", flush=True)
            try:
                result = asyncio.run(measure(args, broker.url, broker.pid, work_dir))
            except BaseException:
                _dump_logs(work_dir)
                raise
    existing: dict[str, Any] = {}
    if args.output.exists():
        with contextlib.suppress(ValueError):
            existing = json.loads(args.output.read_text())
    existing[engine] = result
    args.output.write_text(json.dumps(existing, indent=2) + "\n")
    print_table(result)
    print(f"wrote the {engine} entry of {args.output}")
    for name in ("worker", "gateway") if args.profile else ():
        print(f"\n{name} under {max(args.rate_list):g} req/s:")
        print(summarise_profile(args.profile / f"{name}.txt"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
