"""The two embedded engines behind one interface: Tansu (default, no Java) and Apache Kafka."""

from __future__ import annotations

from pathlib import Path
from types import TracebackType
from typing import Protocol

from lapverse_streams.broker.embedded import EmbeddedBroker
from lapverse_streams.broker.kafka import KafkaBroker

ENGINES = ("tansu", "kafka")


class Broker(Protocol):
    """An embedded broker process: started, stopped, and reached at `url`."""

    @property
    def url(self) -> str:
        """kafka:// URL of the broker."""
        ...

    @property
    def pid(self) -> int | None:
        """Process id of the running broker."""
        ...

    def start(self, timeout_s: float = ...) -> None:
        """Start the broker and return once it answers."""
        ...

    def stop(self, timeout_s: float = ...) -> None:
        """Stop the broker."""
        ...

    def __enter__(self) -> Broker: ...

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...


def embedded_broker(
    engine: str, port: int, host: str = "127.0.0.1", log_path: Path | None = None
) -> Broker:
    """An embedded broker of `engine` ("tansu" or "kafka") on host:port, not yet started."""
    if engine == "kafka":
        return KafkaBroker(port, host, log_path)
    if engine == "tansu":
        return EmbeddedBroker(port, host, log_path)
    raise ValueError(f"unknown embedded broker {engine!r}; use one of {', '.join(ENGINES)}")
