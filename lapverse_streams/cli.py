"""The `lapverse` command: run, worker, gateway, broker, status."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
import time

from lapverse_streams.settings import Settings


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    parser = argparse.ArgumentParser(prog="lapverse", description="LapVerse Streams")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="embedded broker + worker + gateway, with a demo tenant")
    sub.add_parser("worker", help="a Faust worker (governor and executor agents)")
    sub.add_parser("gateway", help="the HTTP gateway")
    sub.add_parser(
        "broker",
        help="the embedded broker (LAPVERSE_EMBEDDED_BROKER) on LAPVERSE_BROKER_URL's port",
    )
    sub.add_parser("status", help="health of a running gateway")
    sub.add_parser("topics", help="create the topics with their partitions, policies, retention")
    args = parser.parse_args(argv)
    settings = Settings.from_env()
    if settings.parent_pid:
        watch_parent(settings.parent_pid)
    if args.command == "worker":
        return run_worker(settings)
    if args.command == "gateway":
        from lapverse_streams.gateway.server import run

        run(settings)
        return 0
    if args.command == "broker":
        return run_broker(settings)
    if args.command == "topics":
        from lapverse_streams.broker.topics import ensure_topics

        asyncio.run(ensure_topics(settings))
        print(f"topics ready on {settings.broker_url}", flush=True)
        return 0
    if args.command == "status":
        from lapverse_streams.status import print_status

        return asyncio.run(print_status(settings))
    from lapverse_streams.launcher import run_all

    return run_all(settings)


def run_worker(settings: Settings) -> int:
    """Run one Faust worker in this process until interrupted."""
    import faust

    from agents.app import create_worker
    from lapverse_streams.observability.logging import configure_logging, logging_config
    from lapverse_streams.observability.tracing import setup_tracing
    from lapverse_streams.runtime import tune_gc

    configure_logging("lapverse-worker", settings.log_level)
    provider = setup_tracing(
        "lapverse-worker",
        settings.environment,
        settings.otlp_endpoint or None,
        settings.recorded_trace_ratio,
    )
    worker = create_worker(settings)
    tune_gc(settings.gc_threshold_values)
    # Faust replaces the root handlers when it starts: hand it ours, so its lines stay JSON.
    faust_worker = faust.Worker(
        worker.app,
        loglevel=settings.log_level.lower(),
        quiet=True,
        logging_config=logging_config("lapverse-worker", settings.log_level),
    )
    # Faust's terminal spinner sets the root logger to DEBUG; every debug call then costs CPU.
    faust_worker.spinner = None
    try:
        faust_worker.execute_from_commandline()  # exits with SystemExit once stopped
    finally:
        provider.shutdown()  # export the spans still queued
    return 0


def watch_parent(parent_pid: int, grace_s: float = 8.0, poll_s: float = 0.5) -> None:
    """Stop this process when `parent_pid`, its parent, dies: SIGTERM, then exit after grace."""
    if os.getppid() != parent_pid:
        try:
            os.kill(parent_pid, 0)
        except OSError:
            os._exit(1)  # the parent died before we could watch it
        return  # started further down the tree: the parent watches its own children

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(poll_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def run_broker(settings: Settings) -> int:
    """Run the embedded broker in the foreground until interrupted."""
    from lapverse_streams.broker.engines import embedded_broker
    from lapverse_streams.broker.topics import ensure_topics

    host, port = settings.broker_host_port
    broker = embedded_broker(settings.embedded_broker, port, host)
    broker.start()
    asyncio.run(ensure_topics(settings))
    print(f"broker listening on {broker.url} (pid {broker.pid}); Ctrl-C stops it", flush=True)
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        broker.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:] if len(sys.argv) > 1 else None))
