"""Importing an agent module does no I/O: no broker client, no topic, no folder.

Tables whose changelogs must be created on the broker are declared when the worker
starts (`agents.app.at_worker_start`, run from Faust's ``on_worker_init``). The check
runs in a fresh interpreter whose Kafka clients raise when constructed, so an agent
module that still touched the broker at import fails the import; the same interpreter
then runs the start-up hooks and must see them reach for the broker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = r"""
import json, sys
import confluent_kafka, confluent_kafka.admin

touched = []

class Boom(Exception):
    pass

def refuse(name):
    def make(*args, **kwargs):
        touched.append(name)
        raise Boom(f"{name} constructed")
    return make

confluent_kafka.admin.AdminClient = refuse("AdminClient")
confluent_kafka.Consumer = refuse("Consumer")
confluent_kafka.Producer = refuse("Producer")

import agents.scene, agents.alerts, agents.site_health  # noqa: E401
at_import = list(touched)
from agents.app import DATADIR, _on_worker_init
made_dir = DATADIR.parent.exists()
try:
    _on_worker_init()
    started = "ok"
except Boom as exc:
    started = str(exc)
print(json.dumps({"at_import": at_import, "dir_at_import": made_dir, "start": started,
                  "touched": touched}))
"""


def test_agent_modules_import_without_touching_the_broker_or_the_disk(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIGIL_", "KAFKA_"))}
    env.update({"VIGIL_STATE_DIR": str(tmp_path / "state"), "KAFKA_BOOTSTRAP": "127.0.0.1:9",
                "VIGIL_TOPIC_PREFIX": "importcheck", "PYTHONPATH": str(ROOT)})
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, text=True,
                         capture_output=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["at_import"] == [], result
    assert result["dir_at_import"] is False, "the worker's state folder was made at import"
    # start-up is where the broker is asked (the first table's changelog), so the probe
    # can tell "moved to start-up" from "removed"
    assert result["start"] == "AdminClient constructed", result
    assert (tmp_path / "state" / "worker" / "importcheck").is_dir()
