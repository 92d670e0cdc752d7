"""Start, find and stop the local stack's processes through pid files.

Why pid files with the process start time: `vigil dev down` must stop only what `dev up`
started, never a process that merely reuses an old pid or a service someone else runs on
the machine. A pid file records ``<pid> <start-time-in-clock-ticks>`` from
``/proc/<pid>/stat``; a pid whose start time differs is somebody else's process and the
file is stale.

Every process starts in its own session (process group), so stopping it also stops the
helpers it forked (Triton's python-backend stubs), and a Ctrl-C in the terminal that ran
`dev up` does not reach the services.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def proc_start_time(pid: int) -> int | None:
    """The process start time in clock ticks since boot, or None if it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":  # a zombie is as good as gone
        return None
    return int(fields[19])  # field 22 of the full line


def _listening_ports() -> set[int] | None:
    """Ports with a TCP socket in LISTEN state (any address), from /proc/net/tcp{,6}."""
    ports: set[int] = set()
    found = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        found = True
        for line in lines:
            fields = line.split()
            if len(fields) > 3 and fields[3] == "0A":  # TCP_LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports if found else None


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True if nothing listens on host:port.

    Looks for a listening socket rather than trying to bind, because a bind test also
    fails over TIME_WAIT leftovers of our own last run (servers that set SO_REUSEADDR
    start fine over those). Without /proc, falls back to a bind with SO_REUSEADDR.
    """
    listening = _listening_ports()
    if listening is not None:
        return port not in listening
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def free_port() -> int:
    """A loopback port nobody listens on now (the child binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_answers(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True if a TCP connection to host:port is accepted."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 20) -> str:
    """The last lines of a log file ('' if it does not exist), for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            data = fh.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""
    return "\n".join(data.splitlines()[-lines:])


class ManagedProcess:
    """One long-running service process known by its pid file and log file."""

    def __init__(self, name: str, run_dir: Path, log_file: Path) -> None:
        self.name = name
        self.pid_file = run_dir / f"{name}.pid"
        self.log_file = log_file

    def pid(self) -> int | None:
        """The pid if the process we started is still alive; removes a stale pid file."""
        try:
            pid_s, start_s = self.pid_file.read_text().split()
            pid, start = int(pid_s), int(start_s)
        except (FileNotFoundError, ValueError):
            return None
        if proc_start_time(pid) != start:
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        user: str | None = None,
        stdout_file: Path | None = None,
    ) -> int:
        """Start detached, output appended to the log file; returns the pid."""
        self.pid_file.parent.mkdir(parents=True, exist_ok=True)
        out = stdout_file or self.log_file
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("ab") as log, open(os.devnull, "rb") as devnull:
            log.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} start: "
                      f"{' '.join(argv)}\n".encode())
            log.flush()
            kwargs: dict[str, object] = {}
            if user is not None:
                kwargs.update(user=user, group=user, extra_groups=[])
            proc = subprocess.Popen(
                list(argv),
                env=dict(env),
                cwd=cwd,
                stdin=devnull,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
                **kwargs,  # type: ignore[arg-type]
            )
        start = proc_start_time(proc.pid)
        self.pid_file.write_text(f"{proc.pid} {start}\n")
        # The child is detached: a zombie reaper is not needed once we return, but keep
        # the Popen so `exited()` can poll it while we wait for readiness.
        self._popen = proc
        return proc.pid

    def exit_code(self) -> int | None:
        """The exit code if the process started by this object has already exited."""
        proc: subprocess.Popen[bytes] | None = getattr(self, "_popen", None)
        if proc is None:
            return None if self.pid() is not None else -1
        return proc.poll()

    def stop(self, timeout: float = 20.0, sig: int = signal.SIGTERM,
             whole_group: bool = True) -> bool:
        """Signal the process (group), wait, then SIGKILL the group. True if it was running."""
        pid = self.pid()
        if pid is None:
            self.pid_file.unlink(missing_ok=True)
            return False
        with contextlib.suppress(ProcessLookupError):
            if whole_group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self._alive(pid):
            time.sleep(0.2)
        if self._alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            kill_deadline = time.monotonic() + 10
            while time.monotonic() < kill_deadline and self._alive(pid):
                time.sleep(0.1)
        # leftovers of the group (e.g. a python-backend stub) go too
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)
        return True

    def _alive(self, pid: int) -> bool:
        proc: subprocess.Popen[bytes] | None = getattr(self, "_popen", None)
        if proc is not None and proc.pid == pid:
            return proc.poll() is None
        return proc_start_time(pid) is not None
