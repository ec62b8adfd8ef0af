"""Lifecycle of an embedded single-node Apache Kafka broker (KRaft) run from its Maven jars."""

from __future__ import annotations

import base64
import os
import re
import shutil
import socket
import struct
import subprocess
import tempfile
import time
import uuid
from pathlib import Path
from types import TracebackType

from lapverse_streams.broker.embedded import die_with_parent, free_port, port_is_open, stop_process

MIN_JAVA_MAJOR = 17
REPO_ROOT = Path(__file__).resolve().parents[2]
POM_PATH = REPO_ROOT / "deploy" / "kafka" / "pom.xml"
FETCH_SCRIPT = REPO_ROOT / "scripts" / "fetch-kafka.sh"
KAFKA_CACHE_DIR = REPO_ROOT / ".lapverse" / "kafka"
SERVER_MAIN = "kafka.Kafka"
STORAGE_TOOL_MAIN = "kafka.tools.StorageTool"
HEAP_OPTS = ("-Xms256m", "-Xmx512m")
JVM_OPTS = (
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
)
_WORK_DIR_PREFIX = "lapverse-kafka-"
_OWNER_FILE = "owner.pid"
_INSTALL_HINT = (
    "install OpenJDK 17 or newer (Debian/Ubuntu: apt-get install openjdk-17-jre-headless), "
    "or use the Tansu engine (LAPVERSE_EMBEDDED_BROKER=tansu), which needs no Java"
)
_LOG4J2 = """\
status = warn
appender.out.type = Console
appender.out.name = out
appender.out.target = SYSTEM_OUT
appender.out.layout.type = PatternLayout
appender.out.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.out.ref = out
# The full config dump of every client and server object: thousands of lines per start.
logger.config.name = org.apache.kafka.common.config.AbstractConfig
logger.config.level = warn
"""


class JavaNotFoundError(RuntimeError):
    """No usable Java runtime for Apache Kafka."""


def java_major_version(java: str) -> int:
    """Major version of the Java runtime at `java` (8 for 1.8, 17 for 17.0.15)."""
    result = subprocess.run([java, "-version"], capture_output=True, text=True, check=True)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', result.stderr + result.stdout)
    if match is None:
        raise JavaNotFoundError(f"cannot read the Java version from `{java} -version`")
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def require_java(java: str | None = None) -> str:
    """Path of a Java 17+ runtime, or JavaNotFoundError saying what to install."""
    found = java or shutil.which("java")
    if found is None:
        raise JavaNotFoundError(
            f"Apache Kafka needs Java {MIN_JAVA_MAJOR}+ and none is on PATH: {_INSTALL_HINT}"
        )
    try:
        major = java_major_version(found)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise JavaNotFoundError(f"cannot run {found}: {exc}; {_INSTALL_HINT}") from exc
    if major < MIN_JAVA_MAJOR:
        raise JavaNotFoundError(
            f"Apache Kafka needs Java {MIN_JAVA_MAJOR}+, {found} is Java {major}: {_INSTALL_HINT}"
        )
    return found


def pinned_kafka_version(pom_path: Path = POM_PATH) -> str:
    """The Kafka version deploy/kafka/pom.xml fetches."""
    match = re.search(r"<kafka\.version>([^<]+)</kafka\.version>", pom_path.read_text())
    if match is None:
        raise ValueError(f"no <kafka.version> in {pom_path}")
    return match.group(1).strip()


def kafka_libs(version: str, fetch: bool = True) -> Path:
    """Directory holding the broker's jars; runs scripts/fetch-kafka.sh when they are missing."""
    libs = KAFKA_CACHE_DIR / version / "libs"
    if (libs / ".complete").exists():
        return libs
    command = f"KAFKA_VERSION={version} bash scripts/fetch-kafka.sh"
    if not fetch:
        raise FileNotFoundError(f"Apache Kafka {version} jars not in {libs}; run `{command}`")
    if shutil.which("mvn") is None:
        raise FileNotFoundError(
            f"Apache Kafka {version} jars not in {libs} and Maven is not installed to fetch them: "
            f"install Maven (apt-get install maven), then run `{command}` (or `make kafka`)"
        )
    env = {**os.environ, "KAFKA_VERSION": version}
    result = subprocess.run(
        ["bash", str(FETCH_SCRIPT)], env=env, capture_output=True, text=True, check=False
    )
    if result.returncode != 0 or not (libs / ".complete").exists():
        raise RuntimeError(f"`{command}` failed:\n{result.stderr[-2000:]}")
    return libs


def new_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64 without padding, as Kafka makes them."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cluster_id.startswith("-"):  # the storage tool would read it as an option
            return cluster_id


def server_properties(
    host: str,
    port: int,
    controller_port: int,
    log_dir: Path,
    *,
    auto_create_topics: bool = False,
    num_partitions: int = 1,
) -> str:
    """server.properties of a combined broker+controller node that keeps its data in log_dir."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{host}:{controller_port}",
        "listeners": f"PLAINTEXT://{host}:{port},CONTROLLER://{host}:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://{host}:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(log_dir),
        "num.partitions": str(num_partitions),
        # The project creates its topics itself; a typo must fail, not make a 1-partition topic.
        "auto.create.topics.enable": str(auto_create_topics).lower(),
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "8",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


def kafka_answers(host: str, port: int, timeout_s: float = 1.0) -> bool:
    """True when host:port answers a Kafka ApiVersions (v0) request without error."""
    client_id = b"lapverse-probe"
    request = struct.pack(">hhih", 18, 0, 1, len(client_id)) + client_id
    try:
        with socket.create_connection((host, port), timeout=timeout_s) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            header = b""
            while len(header) < 10:  # size, correlation id, error code
                chunk = sock.recv(10 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    correlation_id: int
    error_code: int
    _size, correlation_id, error_code = struct.unpack(">iih", header)
    return correlation_id == 1 and error_code == 0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        pass
    return True


def remove_orphaned_work_dirs() -> None:
    """Delete work directories left behind by brokers whose owning process was killed."""
    for work in Path(tempfile.gettempdir()).glob(f"{_WORK_DIR_PREFIX}*"):
        try:
            owner = int((work / _OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue
        if not _pid_alive(owner):
            shutil.rmtree(work, ignore_errors=True)


class KafkaBroker:
    """A single-node Apache Kafka (KRaft) on 127.0.0.1:<port>, data in a temporary directory."""

    def __init__(
        self,
        port: int,
        host: str = "127.0.0.1",
        log_path: Path | None = None,
        *,
        version: str | None = None,
        java: str | None = None,
        auto_create_topics: bool = False,
        num_partitions: int = 1,
    ) -> None:
        self.host = host
        self.port = port
        self.log_path = log_path
        self.version = version or pinned_kafka_version()
        self.java = java
        self.auto_create_topics = auto_create_topics
        self.num_partitions = num_partitions
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._work_dir: Path | None = None

    @property
    def url(self) -> str:
        """kafka:// URL of this broker."""
        return f"kafka://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """Process id of the running broker."""
        return self._process.pid if self._process else None

    def rss_bytes(self) -> int | None:
        """Resident memory of the broker process, from /proc."""
        if self._process is None:
            return None
        try:
            status = Path(f"/proc/{self._process.pid}/status").read_text()
        except OSError:
            return None
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        return int(match.group(1)) * 1024 if match else None

    def start(self, timeout_s: float = 60.0) -> None:
        """Format storage, start the broker and return once it answers Kafka requests."""
        if self._process is not None:
            raise RuntimeError(f"Kafka broker already running (pid {self._process.pid})")
        began = time.monotonic()
        java = require_java(self.java)
        libs = kafka_libs(self.version)
        if port_is_open(self.host, self.port):
            raise RuntimeError(
                f"{self.host}:{self.port} is already in use; cannot start Kafka there"
            )
        remove_orphaned_work_dirs()
        work = Path(tempfile.mkdtemp(prefix=_WORK_DIR_PREFIX))
        self._work_dir = work
        try:
            (work / _OWNER_FILE).write_text(str(os.getpid()))
            config = work / "server.properties"
            config.write_text(
                server_properties(
                    self.host,
                    self.port,
                    free_port(),
                    work / "data",
                    auto_create_topics=self.auto_create_topics,
                    num_partitions=self.num_partitions,
                )
            )
            (work / "log4j2.properties").write_text(_LOG4J2)
            base = [java, *HEAP_OPTS, *JVM_OPTS]
            base += [f"-Dlog4j2.configurationFile={work / 'log4j2.properties'}", "-cp", f"{libs}/*"]
            self._format(base, config)
            self._spawn([*base, SERVER_MAIN, str(config)])
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - began

    def _format(self, base: list[str], config: Path) -> None:
        command = [*base, STORAGE_TOOL_MAIN, "format", "-t", new_cluster_id(), "-c", str(config)]
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")

    def _spawn(self, command: list[str]) -> None:
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self._process = subprocess.Popen(
                command,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,  # noqa: PLW1509
                start_new_session=True,  # a terminal Ctrl-C must not stop it before its clients
            )
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._process is not None and self._process.poll() is not None:
                where = f"; see {self.log_path}" if self.log_path else ""
                raise RuntimeError(f"kafka exited with code {self._process.returncode}{where}")
            if kafka_answers(self.host, self.port):
                return
            time.sleep(0.1)
        raise TimeoutError(f"kafka did not answer on {self.host}:{self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL if it lingers) and delete its data."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            stop_process(process, timeout_s)
        work, self._work_dir = self._work_dir, None
        if work is not None:
            shutil.rmtree(work, ignore_errors=True)

    def __enter__(self) -> KafkaBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
