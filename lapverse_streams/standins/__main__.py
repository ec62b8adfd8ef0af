"""`python -m lapverse_streams.standins {news-ai,share-api} [--port N]`: serve one stand-in."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from collections.abc import Sequence
from typing import cast

from lapverse_streams.standins import APP_FACTORIES, StandInKind, start_standin

DEFAULT_PORTS: dict[StandInKind, int] = {"news-ai": 8091, "share-api": 8092}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m lapverse_streams.standins",
        description="Serve a local stand-in; change its faults with PUT /control.",
    )
    parser.add_argument("kind", choices=sorted(APP_FACTORIES))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, help="default 8091 (news-ai) / 8092 (share-api); 0 picks a free one"
    )
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api-key", help="require 'Authorization: Bearer <key>'")
    key.add_argument("--api-key-env", metavar="VAR", help="read that key from $VAR instead")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--failure-rate", type=float, default=0.0, help="0..1, answered with 503")
    parser.add_argument("--seed", type=int, help="seed of the failure draws")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace) -> None:
    """Run until SIGINT or SIGTERM; print the URL once listening."""
    kind = cast(StandInKind, args.kind)
    api_key = os.environ.get(args.api_key_env) if args.api_key_env else args.api_key
    if args.api_key_env and not api_key:
        raise SystemExit(f"${args.api_key_env} is empty or unset")
    port = DEFAULT_PORTS[kind] if args.port is None else args.port
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        standin = await start_standin(
            kind,
            args.host,
            port,
            api_key=api_key,
            latency_ms=args.latency_ms,
            failure_rate=args.failure_rate,
            seed=args.seed,
        )
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    async with standin:
        print(f"{kind} stand-in listening on {standin.url}", flush=True)
        await stopping.wait()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point."""
    asyncio.run(serve(parse_args(argv)))


if __name__ == "__main__":
    main()
