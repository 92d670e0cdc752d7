"""Start and stop a real `tritonserver` (from the nvidia-pytriton wheel) for tests.

The command line is the one docs/models.md gives, verified on CPU:
- the wheel lives in its own venv (``.vigil/triton-venv``; it pins numpy<2);
- the python backend stub is copied from ``python_backend_stubs/3.11`` into
  ``backends/python/`` once;
- ``LD_LIBRARY_PATH`` includes the wheel's ``nvidia_pytriton.libs``;
- the stub imports from the *active* venv, so VIRTUAL_ENV/PATH/PYTHONPATH point there;
- explicit model control loads just the two Vigil models (other folders in the repository,
  e.g. a stack smoke-test model, are left alone).
Tests that kill Triton mid-stream need a server they own, hence a helper and not the
shared dev stack.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TRITON_VENV = Path(os.environ.get("VIGIL_TEST_TRITON_VENV", ROOT / ".vigil" / "triton-venv"))
MODELS = ROOT / "infra" / "triton" / "models"
MODEL_NAMES = ("person_detector", "appearance_embedder")


def site_packages(venv: Path = TRITON_VENV) -> Path:
    return next((venv / "lib").glob("python3.*/site-packages"))


def command(
    grpc_port: int,
    http_port: int,
    metrics_port: int,
    repositories: tuple[Path, ...] = (MODELS,),
    models: tuple[str, ...] = MODEL_NAMES,
) -> tuple[list[str], dict[str, str]]:
    """The tritonserver argv and environment (stub installed as a side effect)."""
    sp = site_packages()
    server = sp / "pytriton" / "tritonserver"
    stub = server / "backends" / "python" / "triton_python_backend_stub"
    if not stub.exists():
        shutil.copy2(server / "python_backend_stubs" / "3.11" / stub.name, stub)
    env = dict(os.environ)
    env["VIRTUAL_ENV"] = str(TRITON_VENV)
    env["PATH"] = f"{TRITON_VENV / 'bin'}:{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(sp)
    libs = [str(sp / "nvidia_pytriton.libs"), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = ":".join(p for p in libs if p)
    argv = [
        str(server / "bin" / "tritonserver"),
        *(f"--model-repository={r}" for r in repositories),
        f"--backend-directory={server / 'backends'}",
        "--grpc-address=127.0.0.1",
        "--http-address=127.0.0.1",
        f"--grpc-port={grpc_port}",
        f"--http-port={http_port}",
        f"--metrics-port={metrics_port}",
        "--model-control-mode=explicit",
        *(f"--load-model={m}" for m in models),
        "--log-verbose=0",
    ]
    return argv, env


class TritonServer:
    """One tritonserver process on fixed ports (http = grpc - 1, metrics = grpc + 1)."""

    def __init__(
        self,
        grpc_port: int = 28001,
        log_file: Path | None = None,
        repositories: tuple[Path, ...] = (MODELS,),
        models: tuple[str, ...] = MODEL_NAMES,
    ) -> None:
        self.grpc_port = grpc_port
        self.repositories = repositories
        self.models = models
        self.http_port = grpc_port - 1
        self.metrics_port = grpc_port + 1
        self.log_file = log_file or Path(f"/tmp/vigil-test-triton-{grpc_port}.log")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def ready(self) -> bool:
        try:
            r = httpx.get(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=1.0)
        except httpx.HTTPError:
            return False
        return r.status_code == 200

    def start(self, timeout: float = 120.0) -> None:
        argv, env = command(self.grpc_port, self.http_port, self.metrics_port,
                            self.repositories, self.models)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                code = self.proc.returncode
                raise RuntimeError(f"tritonserver exited {code}; see {self.log_file}")
            if self.ready():
                return
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"tritonserver not ready in {timeout}s; see {self.log_file}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        """Stop our process group (the server and its python stubs)."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                return
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)

    def kill(self) -> None:
        """Abrupt death, as in a crash (SIGKILL to the whole group)."""
        self.stop(sig=signal.SIGKILL)
