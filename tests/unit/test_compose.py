"""docker-compose.yml and the Dockerfile, checked without Docker.

- the file validates against the Compose Specification JSON schema (vendored in
  tests/data/compose-spec.json from the `check-jsonschema` wheel on PyPI, which ships it as
  `check_jsonschema/builtin_schemas/vendor/compose-spec.json`; Apache-2.0, see
  tests/data/LICENSE.compose-spec);
- every `vigil ...` command a service runs exists in `vigil_cli.main.build_parser()`; a command
  whose component is not built yet but is announced in `vigil_cli.main.COMMAND_MODULES` is an
  expected failure (xfail), anything else fails;
- environment variables are names that the settings classes read;
- dependencies wait on health checks that exist; workers can be scaled.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from pydantic_settings import BaseSettings

from vigil.settings import COMPONENT_PREFIXES, _known_env_names
from vigil_cli import main as cli

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SPEC = Path(__file__).resolve().parents[1] / "data" / "compose-spec.json"

VIGIL_SERVICES = {"init", "edge", "worker", "notifier", "projector", "api", "backup"}
INFRA_SERVICES = {"kafka", "schema-registry", "postgres", "minio", "triton", "prometheus",
                  "grafana", "alertmanager", "postgres-exporter", "node-exporter"}
#: Host paths outside the repository that a service may bind-mount: only the host's root,
#: read-only, for node-exporter to see the host's filesystems.
HOST_PATHS = {"node-exporter": {"/"}}

#: Component settings classes (``VIGIL_<PART>_*``), checked when their module exists.
COMPONENT_SETTINGS = (
    "agents.settings", "agents.inference_settings", "projections.settings", "api.settings",
    "edge_producer.settings", "agents.notify_settings",
)


def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def test_compose_validates_against_the_compose_specification() -> None:
    schema = json.loads(SPEC.read_text(encoding="utf-8"))
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    errors = sorted(validator_cls(schema).iter_errors(_compose()), key=lambda e: e.json_path)
    assert [f"{e.json_path}: {e.message}" for e in errors] == []


def test_the_schema_check_rejects_a_broken_file() -> None:
    schema = json.loads(SPEC.read_text(encoding="utf-8"))
    broken = _compose()
    broken["services"]["api"]["depends_on"] = {"postgres": {"condition": "when_it_feels_like"}}
    broken["services"]["worker"]["restart_policy"] = "always"
    assert len(list(jsonschema.validators.validator_for(schema)(schema).iter_errors(broken))) >= 2


def test_every_part_of_the_architecture_is_a_service() -> None:
    assert set(_services()) >= VIGIL_SERVICES | INFRA_SERVICES
    assert _services()["kafka"]["image"] == "apache/kafka:3.9.1"
    assert re.fullmatch(r"pgvector/pgvector:[0-9.]+-pg17", _services()["postgres"]["image"])
    assert _services()["schema-registry"]["image"].startswith("confluentinc/cp-schema-registry")
    assert _services()["triton"]["image"].startswith("nvcr.io/nvidia/tritonserver")
    assert any(v.startswith("./infra/triton/models:") for v in _services()["triton"]["volumes"])


def test_vigil_services_share_one_image_from_the_dockerfile() -> None:
    for name in VIGIL_SERVICES:
        svc = _services()[name]
        assert svc["build"]["dockerfile"] == "Dockerfile", name
        assert svc["image"] == "vigil:local", name


def test_workers_can_be_scaled() -> None:
    worker = _services()["worker"]
    assert "container_name" not in worker
    assert "ports" not in worker, "a fixed host port stops --scale worker=N"
    for volume in worker.get("volumes", []):
        assert ":" not in str(volume), "replicas must not share a RocksDB state volume"


def test_dependencies_wait_for_health_checks_that_exist() -> None:
    services = _services()
    for name, svc in services.items():
        for dep, cond in (svc.get("depends_on") or {}).items():
            assert dep in services, f"{name} depends on unknown {dep}"
            condition = cond["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in services[dep], f"{name} waits for {dep}'s health"
            elif condition == "service_completed_successfully":
                assert services[dep].get("restart") == "no", f"{dep} must be a one-shot"
    for name in INFRA_SERVICES | {"api", "worker", "projector"}:
        assert "healthcheck" in services[name], name
    for name in VIGIL_SERVICES - {"init"}:
        assert services[name]["depends_on"]["init"]["condition"] == (
            "service_completed_successfully"
        )


def _mounts(svc: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of every volume; source '' for an anonymous volume."""
    out = []
    for volume in svc.get("volumes", []):
        parts = str(volume).split(":")
        out.append(("", parts[0]) if len(parts) == 1 else (parts[0], parts[1]))
    return out


def test_every_bind_mounted_host_path_exists_in_the_repository() -> None:
    """A fresh clone must have every file compose mounts: `docker compose up` fails (or
    mounts an empty directory Docker made up) otherwise."""
    named = set(_compose().get("volumes") or {})
    for name, svc in _services().items():
        for source, _target in _mounts(svc):
            if not source or source in named:
                continue
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts {source}, not in the repository"
            else:
                assert source in HOST_PATHS.get(name, set()), f"{name} mounts host path {source}"


def _image_files() -> dict[str, Path]:
    """What the Dockerfile copies into the Vigil image: {image path: repository path}."""
    out = {}
    workdir = "/"
    for line in (ROOT / "Dockerfile").read_text(encoding="utf-8").splitlines():
        words = line.split()
        if words[:1] == ["WORKDIR"]:
            workdir = words[1]
        elif words[:1] == ["COPY"] and not any(w.startswith("--") for w in words):
            *sources, dest = words[1:]
            for src in sources:
                target = dest if dest.startswith("/") else f"{workdir.rstrip('/')}/{dest}"
                if target.endswith("/") or len(sources) > 1 or target.endswith("./"):
                    target = target.rstrip("./").rstrip("/") + "/" + Path(src).name
                out[target.replace("/./", "/")] = ROOT / src
    return out


def _in_image(svc: dict[str, Any], path: str) -> Path | bool | None:
    """The repository file behind `path` in the container (a bind mount or a COPY), True
    when it lies in a named/anonymous volume (made at run time), None if nowhere."""
    for source, target in _mounts(svc):
        if path == target or path.startswith(target.rstrip("/") + "/"):
            if not source.startswith("./"):
                return True
            return ROOT / source / path[len(target):].lstrip("/")
    if svc.get("image") == "vigil:local":
        for target, repo in _image_files().items():
            if path == target or path.startswith(target + "/"):
                return repo / path[len(target):].lstrip("/")
    return None


def _path_args(command: Any) -> list[str]:
    words = shlex.split(command) if isinstance(command, str) else [str(w) for w in command]
    if len(words) >= 3 and words[0] in ("sh", "bash") and words[1] == "-c":
        words = shlex.split(words[2].replace("&&", " "))
    out = []
    for w in words:
        value = w.split("=", 1)[1] if w.startswith("--") and "=" in w else w
        if value.startswith("/") and len(value) > 1:
            out.append(value)
    return out


@pytest.mark.parametrize("name", sorted(_services()))
def test_every_file_a_command_names_exists_in_the_container(name: str) -> None:
    """Paths in a service's command come from a bind mount of a repository file, from the
    Vigil image (Dockerfile COPY), or are a volume the service owns (data directories)."""
    svc = _services()[name]
    for path in _path_args(svc.get("command") or []):
        found = _in_image(svc, path)
        assert found is not None, f"{name}: {path} is neither mounted nor in the image"
        if isinstance(found, Path):
            assert found.exists(), f"{name}: {path} comes from {found}, which does not exist"


def test_shipped_site_runs_a_synthetic_site_from_scenarios_in_the_image() -> None:
    """config/ makes `docker compose up` work on a fresh clone: the site file validates, the
    edge file parses, and every sim:// camera names a scenario the image ships."""
    from edge_producer.config import load_edge_config
    from edge_producer.sim.scenario import SCENARIO_DIR
    from schemas.site_config import load_site

    site = load_site(ROOT / "config" / "site.yaml")
    edge = load_edge_config(ROOT / "config" / "edge.yaml")
    assert site.site_id == edge.site_id and site.edge_id == edge.edge_id
    assert {c.camera_id for c in site.cameras} == {c.camera_id for c in edge.cameras}
    assert site.rules, "a synthetic site without rules raises no alert"
    copied = _image_files()
    assert any(repo == ROOT / "edge_producer" for repo in copied.values())
    for cam in edge.cameras:
        assert cam.url.startswith("sim://"), cam.url
        name = cam.url[len("sim://"):]
        assert (SCENARIO_DIR / f"{name}.yaml").is_file(), f"{name} is not a shipped scenario"
        assert SCENARIO_DIR.is_relative_to(ROOT / "edge_producer")
    pyproject = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    assert '"*.yaml"' in pyproject, "scenarios must be installed with the package"


def test_every_image_is_pinned_with_its_confirmation_noted() -> None:
    """No moving tags (latest, a bare major): each image names a release, and the line
    before it says where that tag was confirmed to exist."""
    lines = COMPOSE.read_text(encoding="utf-8").splitlines()
    seen: set[str] = set()
    for n, line in enumerate(lines):
        m = re.match(r"\s+image:\s*(\S+)", line)
        if not m or m.group(1) == "vigil:local":
            continue
        image = m.group(1)
        repo, _, tag = image.rpartition(":")
        assert repo and tag and tag != "latest", f"{image} is not pinned"
        assert re.search(r"\d+\.\d+|\d{4}-\d{2}-\d{2}", tag), f"{image}: tag is not a release"
        if image in seen:
            continue  # the same image again (minio-buckets reuses minio's)
        seen.add(image)
        before = "\n".join(lines[max(0, n - 4):n])
        assert "tag confirmed:" in before, f"{image}: note where the tag was confirmed"


# ----------------------------------------------------------------- vigil commands


def _vigil_invocations() -> list[tuple[str, list[str]]]:
    """(service, argv after `vigil`) for every vigil command a service runs."""
    out = []
    for name, svc in _services().items():
        command = svc.get("command")
        if not command:
            continue
        argv = command if isinstance(command, list) else shlex.split(command)
        if argv[:2] == ["sh", "-c"]:
            for part in re.split(r"&&|;|\|\|", " ".join(argv[2:])):
                words = shlex.split(part)
                if words and words[0] == "vigil":
                    out.append((name, words[1:]))
        elif argv and argv[0] == "vigil":
            out.append((name, argv[1:]))
    return out


def _announced_commands() -> dict[str, str]:
    """{top-level command: module} from the comments of vigil_cli.main.COMMAND_MODULES."""
    source = inspect.getsource(cli)
    announced: dict[str, str] = {}
    for module, comment in re.findall(r'^\s*"([\w.]+)",\s*#\s*(.+)$', source, re.MULTILINE):
        for piece in comment.split(","):
            words = piece.split()
            if words:
                announced[words[0]] = module
    return announced


def _registered(parser: argparse.ArgumentParser) -> set[str]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return set(action.choices)
    return set()


def test_every_vigil_service_runs_a_vigil_command() -> None:
    services = {name for name, _ in _vigil_invocations()}
    assert services == VIGIL_SERVICES
    init = [argv for name, argv in _vigil_invocations() if name == "init"]
    assert init == [["topics", "apply"], ["db", "upgrade"], ["config", "apply",
                                                            "/config/site.yaml"]]


@pytest.mark.parametrize(("service", "argv"), _vigil_invocations(),
                         ids=[f"{s}:{' '.join(a[:2])}" for s, a in _vigil_invocations()])
def test_compose_commands_exist_in_the_cli(service: str, argv: list[str]) -> None:
    parser = cli.build_parser()
    command = argv[0]
    if command not in _registered(parser):
        announced = _announced_commands()
        if command in announced:
            pytest.xfail(f"`vigil {command}` ({announced[command]}) is not built yet")
        pytest.fail(f"service {service} runs `vigil {' '.join(argv)}`, but `{command}` is "
                    f"neither registered nor announced in vigil_cli.main.COMMAND_MODULES")
    try:
        parser.parse_args(argv)
    except SystemExit as exc:
        pytest.fail(f"service {service}: `vigil {' '.join(argv)}` does not parse ({exc})")


# ----------------------------------------------------------------- environment


def _component_env_names() -> tuple[set[str], set[str]]:
    """(names, prefixes) read by the component settings classes that exist."""
    names: set[str] = set()
    prefixes: set[str] = set()
    for module_name in COMPONENT_SETTINGS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue
            raise
        for obj in vars(module).values():
            if inspect.isclass(obj) and issubclass(obj, BaseSettings) and obj is not BaseSettings:
                prefix = obj.model_config.get("env_prefix") or ""
                if prefix:
                    prefixes.add(prefix)
                    names |= {f"{prefix}{field.upper()}" for field in obj.model_fields}
    try:
        edge = importlib.import_module("edge_producer.config")
    except ModuleNotFoundError as exc:
        if exc.name != "edge_producer.config":
            raise
    else:  # the edge file's scalars can be overridden by VIGIL_EDGE_<FIELD>
        prefixes.add(edge.ENV_PREFIX)
        names |= {f"{edge.ENV_PREFIX}{f.upper()}" for f in edge.EdgeConfig.model_fields
                  if f != "cameras"}
    return names, prefixes


def test_environment_uses_names_the_settings_read() -> None:
    known = _known_env_names()
    component_names, component_prefixes = _component_env_names()
    for name in VIGIL_SERVICES:
        env = _services()[name]["environment"]
        assert {"KAFKA_BOOTSTRAP", "DATABASE_URL", "TRITON_URL", "S3_ENDPOINT",
                "S3_ACCESS_KEY", "S3_SECRET_KEY", "SCHEMA_REGISTRY_URL"} <= set(env), name
        for key in env:
            if key in known or key in component_names:
                continue
            assert key.startswith("VIGIL_"), f"{name}: {key} is read by no settings class"
            owner = next((p for p in component_prefixes if key.startswith(p)), None)
            assert owner is None, f"{name}: {key} is not a field of the {owner}* settings"
            assert key.startswith(COMPONENT_PREFIXES), f"{name}: unknown setting {key}"


# ----------------------------------------------------------------- Dockerfile


def test_dockerfile_builds_a_non_root_python_311_image() -> None:
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.MULTILINE)
    assert re.search(r"pip install \.", text)
    users = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
    assert users and users[-1] not in {"root", "0"}
    copied = set(re.findall(r"^COPY\s+(\S+)\s", text, re.MULTILINE))
    for package in ("vigil", "schemas", "edge_producer", "agents", "projections", "api"):
        assert package in copied, f"the image lacks {package}/"
