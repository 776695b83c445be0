"""A real single-node Apache Kafka (KRaft, broker+controller) run from cached jars.

No Docker: the broker is a plain JVM process in its own session, bound to 127.0.0.1,
with all its state under one ``home`` directory::

    home/kafka.json         ports (chosen once, kept across restarts)
    home/server.properties  broker config (rewritten on every start)
    home/log4j2.properties  logging config (WARN and above)
    home/data/              log.dirs (formatted once)
    home/kafka.log          stdout+stderr of the JVM (appended, one banner per start)
    home/kafka.pid          pid of the running JVM
"""

from __future__ import annotations

import base64
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from kafka import KafkaAdminClient

from crm.devservices._kafka_jars import (
    KAFKA_VERSION,
    default_cache_dir,
    ensure_kafka_jars,
    find_java,
    kafka_jars_ready,
)
from crm.devservices._proc import (
    LOOPBACK,
    cmdline,
    free_port,
    log_tail,
    pid_alive,
    pids_mentioning,
    port_answers,
    port_is_free,
    read_json,
    signal_group,
    terminate,
    wait_for_exit,
    write_json,
    write_text,
)
from crm.devservices.errors import DevServiceError

__all__ = ["KAFKA_VERSION", "LocalKafka", "default_cache_dir", "ensure_kafka_jars"]

Progress = Callable[[str], None]

_LOG4J2 = """\
rootLogger.level = WARN
rootLogger.appenderRef.stdout.ref = STDOUT
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
"""

_BANNER = "===== loopcrm: starting Kafka"


def new_cluster_id() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding.

    Never one starting with ``-`` (1 in 64 would): ``kafka-storage format -t -x...``
    reads it as an option and fails. Kafka's own ``Uuid.randomUuid`` skips them too.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(secrets.token_bytes(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _java_major(java: str) -> int:
    """Major version of the ``java`` launcher (8 for "1.8.0_x", 17 for "17.0.1")."""
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=60)
    match = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if match is None:
        return 0
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


class LocalKafka:
    """One KRaft broker+controller on 127.0.0.1, its state in ``home``.

    Ports: when ``port``/``controller_port`` are None, the ones recorded in
    ``home/kafka.json`` are reused, else free ones are picked and recorded. The
    controller port is fixed once storage is formatted (the quorum remembers it).
    The process outlives this object and the Python process that started it; a later
    ``LocalKafka(home)`` finds it again through ``home/kafka.pid``.
    """

    def __init__(
        self,
        home: Path,
        *,
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        cache_dir: Path | None = None,
    ) -> None:
        self.home = Path(home).expanduser().resolve()
        self.heap = heap
        self.cache_dir = cache_dir
        saved = read_json(self.home / "kafka.json")
        formatted_cport = saved.get("controller_port") if self._formatted else None
        if controller_port is not None and formatted_cport not in (None, controller_port):
            raise DevServiceError(
                f"{self.home} was formatted with controller port {formatted_cport}; "
                f"it cannot change to {controller_port} (use a fresh home)"
            )
        self.port: int = port or saved.get("port") or free_port()
        self.controller_port: int = controller_port or saved.get("controller_port") or 0
        if not self.controller_port:
            self.controller_port = free_port()
            while self.controller_port == self.port:
                self.controller_port = free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    # -- paths and facts --------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """Bootstrap servers string, ``"127.0.0.1:PORT"``."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def version(self) -> str:
        """The Kafka version this broker runs (the pinned ``KAFKA_VERSION``)."""
        return KAFKA_VERSION

    @property
    def data_dir(self) -> Path:
        """The broker's ``log.dirs``."""
        return self.home / "data"

    @property
    def log_path(self) -> Path:
        """Where the JVM's stdout and stderr go."""
        return self.home / "kafka.log"

    @property
    def config_path(self) -> Path:
        return self.home / "server.properties"

    @property
    def _pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def _formatted(self) -> bool:
        return (self.data_dir / "meta.properties").is_file()

    @property
    def pid(self) -> int | None:
        """Pid of the running broker JVM, or None if it is not running."""
        try:
            pid = int(self._pid_file.read_text().strip())
        except (OSError, ValueError):
            pid = 0
        # Guard against pid reuse: the process must be *our* broker.
        if pid and pid_alive(pid) and self._broker_needle in cmdline(pid):
            return pid
        found = pids_mentioning(self._broker_needle)  # the pid file was lost or is stale
        return found[0] if found else None

    def is_running(self) -> bool:
        """True if this home's broker process is alive (it may still be booting)."""
        return self.pid is not None

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, timeout: float = 90, *, on_progress: Progress | None = None) -> None:
        """Start the broker (no-op if running) and return once it answers requests.

        Fetches the jars if needed, writes the config, formats storage the first time,
        spawns the JVM detached (own session) and waits until an admin client's
        ``describe_cluster()`` lists the broker. Raises DevServiceError with the log's
        tail if the JVM dies or does not answer within ``timeout`` seconds (counted
        after the one-time jar fetch; the JVM is then stopped). ``on_progress``
        receives short human-readable step messages.
        """
        say = on_progress or (lambda _msg: None)
        if not self.is_running():
            if not kafka_jars_ready(cache_dir=self.cache_dir):
                say(f"fetching Kafka {KAFKA_VERSION} jars…")
            libs = ensure_kafka_jars(KAFKA_VERSION, self.cache_dir)
            deadline = time.monotonic() + timeout
            java = find_java()
            if _java_major(java) < 17:
                raise DevServiceError(f"Kafka {KAFKA_VERSION} needs Java 17+; {java} is older")
            self._check_ports_free()
            self._write_config()
            if not self._formatted:
                say("formatting Kafka storage…")
                self._format(java, libs)
            say("starting Kafka…")
            self._spawn(java, libs)
        else:
            deadline = time.monotonic() + timeout
        say("waiting for broker…")
        try:
            self._wait_until_ready(deadline)
        except BaseException:
            self.stop(timeout=10)
            raise

    def stop(self, timeout: float = 30) -> None:
        """Stop the broker: SIGTERM its process group, SIGKILL after ``timeout`` s.

        Returns once the process is gone. Idempotent: stopping a stopped broker is a no-op.
        """
        pid = self.pid
        if pid is not None:
            terminate(pid, timeout)
        for stray in self._strays():
            terminate(stray, timeout)
        self._forget()

    def kill(self) -> None:
        """SIGKILL the broker (a crash, for tests). Data written so far survives."""
        pid = self.pid
        for victim in {*([pid] if pid is not None else []), *self._strays()}:
            signal_group(victim, signal.SIGKILL)
            wait_for_exit(victim, 10)
        self._forget()

    def restart(self, timeout: float = 90) -> None:
        """``stop()`` then ``start(timeout)``; same ports, same data."""
        self.stop()
        self.start(timeout)

    # -- internals ------------------------------------------------------------------------

    def _check_ports_free(self) -> None:
        for name, port in (("broker", self.port), ("controller", self.controller_port)):
            if not port_is_free(port):
                raise DevServiceError(
                    f"Kafka {name} port {port} on {LOOPBACK} is in use by another process; "
                    f"stop it or choose another port (recorded in {self.home / 'kafka.json'})"
                )

    def _write_config(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        write_json(
            self.home / "kafka.json",
            {"port": self.port, "controller_port": self.controller_port},
        )
        write_text(self.home / "log4j2.properties", _LOG4J2)
        write_text(self.config_path, self._properties(self.data_dir))

    def _properties(self, log_dir: Path) -> str:
        broker = f"{LOOPBACK}:{self.port}"
        controller = f"{LOOPBACK}:{self.controller_port}"
        settings = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": controller,
            "listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "advertised.listeners": f"PLAINTEXT://{broker},CONTROLLER://{controller}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(log_dir),
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "num.partitions": "1",
            "auto.create.topics.enable": "false",
            # After a crash the restarted broker can only re-register once the old
            # registration's session expired: 5 s instead of 9 s makes crash tests faster.
            "broker.heartbeat.interval.ms": "1000",
            "broker.session.timeout.ms": "5000",
        }
        lines = ["# Written by loopcrm's LocalKafka on every start; edits are lost."]
        lines += [f"{key}={value}" for key, value in settings.items()]
        return "\n".join(lines) + "\n"

    def _format(self, java: str, libs: Path) -> None:
        """Format storage into a temp dir and rename it into place (atomic)."""
        staging = self.home / "data.formatting"
        shutil.rmtree(staging, ignore_errors=True)
        config = self.home / "format.properties"
        write_text(config, self._properties(staging))
        command = [
            java,
            *self._jvm_flags(libs, heap="256m"),
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "--cluster-id",
            new_cluster_id(),
            "--config",
            str(config),
        ]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        config.unlink(missing_ok=True)
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise DevServiceError(
                f"formatting Kafka storage failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr).strip()[-3000:]}"
            )
        shutil.rmtree(self.data_dir, ignore_errors=True)  # an unformatted leftover
        os.rename(staging, self.data_dir)

    def _jvm_flags(self, libs: Path, heap: str) -> list[str]:
        return [
            f"-Xmx{heap}",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",
        ]

    def _spawn(self, java: str, libs: Path) -> None:
        command = [java, *self._jvm_flags(libs, self.heap), "kafka.Kafka", str(self.config_path)]
        with open(self.log_path, "ab") as log:
            log.write(f"\n{_BANNER} {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.home,
                start_new_session=True,
                close_fds=True,
            )
        write_text(self._pid_file, f"{self._proc.pid}\n")

    def _wait_until_ready(self, deadline: float) -> None:
        last_error = "the broker port never accepted a connection"
        while True:
            if not self.is_running():
                raise DevServiceError(
                    f"Kafka exited during startup; {self.log_path} ends with:\n"
                    f"{log_tail(self.log_path, since_marker=_BANNER)}"
                )
            if port_answers(self.port):
                try:
                    if self._broker_answers():
                        return
                    last_error = "the broker is not registered yet"
                except Exception as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise DevServiceError(
                    f"Kafka did not answer on {self.bootstrap} in time ({last_error}); "
                    f"{self.log_path} ends with:\n{log_tail(self.log_path, since_marker=_BANNER)}"
                )
            time.sleep(0.5)

    def _broker_answers(self) -> bool:
        admin = KafkaAdminClient(
            bootstrap_servers=self.bootstrap,
            client_id="loopcrm-devservices-probe",
            request_timeout_ms=5000,
            bootstrap_timeout_ms=5000,
        )
        try:
            cluster = admin.describe_cluster()
        finally:
            admin.close()
        return bool(cluster.get("brokers"))

    @property
    def _broker_needle(self) -> str:
        """What only this home's broker JVM has in its command line."""
        return f"kafka.Kafka {self.config_path}"

    def _strays(self) -> list[int]:
        """Other broker JVMs of this home (only if someone started a second one)."""
        return [pid for pid in pids_mentioning(self._broker_needle) if pid != self.pid]

    def _forget(self) -> None:
        """Drop the pid file and reap our child, if any (the process is gone)."""
        self._pid_file.unlink(missing_ok=True)
        if self._proc is not None:
            self._proc.poll()
            self._proc = None
