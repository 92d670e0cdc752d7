"""Real counterparts for the notifier's channels, on loopback ports the tests pick:
an SMTP server (aiosmtpd) that can go down and come back, Debian's mosquitto broker, an
independent MQTT subscriber (paho-mqtt), and the notifier as a subprocess."""

from __future__ import annotations

import asyncio
import email
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from email.message import Message as EmailMessage
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.integration.alerts_support import ROOT


class SmtpSink:
    """aiosmtpd on 127.0.0.1:`port`, keeping every received message (parsed) with its
    envelope recipients. `delay_s` holds the reply to DATA after the message is stored,
    which is where a client killed mid-send leaves a message received but unconfirmed."""

    def __init__(self, port: int, delay_s: float = 0.0, **controller_kw: Any):
        self.port, self.delay_s, self.kw = port, delay_s, controller_kw
        self.received: list[tuple[list[str], EmailMessage]] = []
        self.lock = threading.Lock()
        self.controller: Controller | None = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content or envelope.content)
        with self.lock:
            self.received.append((list(envelope.rcpt_tos), msg))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return "250 OK"

    def start(self) -> None:
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **self.kw)
        self.controller.start()

    def stop(self) -> None:
        if self.controller is not None:
            self.controller.stop()
            self.controller = None

    def messages(self) -> list[tuple[list[str], EmailMessage]]:
        with self.lock:
            return list(self.received)

    def wait_for(self, pred: Callable[[list[tuple[list[str], EmailMessage]]], bool],
                 timeout: float) -> list[tuple[list[str], EmailMessage]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            got = self.messages()
            if pred(got):
                return got
            time.sleep(0.2)
        raise AssertionError(f"timed out; SMTP got {[(r, m['Subject']) for r, m in got]}")


class Authenticator:
    def __init__(self, user: str, password: str):
        self.user, self.password = user.encode(), password.encode()

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str,
                 auth_data: Any) -> AuthResult:
        ok = (isinstance(auth_data, LoginPassword) and auth_data.login == self.user
              and auth_data.password == self.password)
        return AuthResult(success=ok, handled=False)  # the server answers 235 or 535


def self_signed_cert(tmp: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 (openssl), for the STARTTLS/TLS tests."""
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


class Mosquitto:
    """Debian's mosquitto on 127.0.0.1:`port`, no persistence, anonymous clients."""

    def __init__(self, port: int, tmp: Path):
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        if not Path(exe).exists():
            raise AssertionError("mosquitto not found: install Debian's `mosquitto` package "
                                 "(infra/apt-packages.txt)")
        conf = tmp / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                        "persistence false\nlog_dest stderr\n")
        self.log = (tmp / "mosquitto.log").open("wb")
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        self.port = port
        end = time.monotonic() + 20
        while time.monotonic() < end:
            probe = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
            try:
                probe.connect("127.0.0.1", port)
                probe.disconnect()
                return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError("mosquitto did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.log.close()


class Subscriber:
    """An independent MQTT client subscribed to `topic` (QoS 1), recording messages."""

    def __init__(self, port: int, topic: str = "vigil/#"):
        self.got: list[tuple[str, bytes, bool]] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"sub-{uuid.uuid4().hex[:6]}")
        c.on_message = self._on_message
        c.on_subscribe = lambda *_a: self.subscribed.set()
        c.on_connect = lambda cl, *_a: cl.subscribe(topic, qos=1)
        c.connect("127.0.0.1", port)
        c.loop_start()
        self.client = c
        if not self.subscribed.wait(10):
            raise AssertionError("MQTT subscription not acknowledged")

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        with self.lock:
            self.got.append((msg.topic, msg.payload, bool(msg.retain)))

    def messages(self) -> list[tuple[str, bytes, bool]]:
        with self.lock:
            return list(self.got)

    def wait_for(self, pred: Callable[[list[tuple[str, bytes, bool]]], bool], timeout: float
                 ) -> list[tuple[str, bytes, bool]]:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if pred(self.messages()):
                return self.messages()
            time.sleep(0.1)
        raise AssertionError(f"timed out; MQTT got {self.messages()}")

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class NotifierProc:
    """`python -m agents.cli notifier` in its own process group; ready on its log line."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> None:
        start = self.log.stat().st_size if self.log.exists() else 0
        fh = self.log.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "agents.cli", "notifier"],
                                     env=self.env, cwd=ROOT, stdout=fh,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise AssertionError(f"notifier exited: {self.log.read_bytes()[-3000:]!r}")
            with self.log.open("rb") as f:
                f.seek(start)
                if b"notifier started" in f.read():
                    return
            time.sleep(0.2)
        self.stop()
        raise AssertionError(f"notifier not ready: {self.log.read_bytes()[-3000:]!r}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
