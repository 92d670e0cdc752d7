"""The fault harness: one isolated pipeline of real processes, and the oracle that judges it.

Why real processes: the faults under test (SIGKILL between a produce and a commit, a lost
TCP path, a broker restart) only happen across process and socket boundaries; an
in-process test would hide exactly the windows we want to hit. Every `Pipeline` gets its
own topic prefix, read-model schema, state folder and ports, so runs never see each
other's data and never disturb a developer's stack.

The oracle compares SETS: the events in the Kafka log (what was produced) against the
rows in the read model (what was projected), per camera sequence and per event id; a
count alone would let one loss and one duplicate cancel out.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from tools.devstack.process import free_port
from vigil.errors import VigilError

#: projected topic -> the read-model table with one row per event and its log position
_ROWS_OF_TOPIC = {"frames": "frames", "detections": "frame_analyses",
                  "scene": "scene_events", "alerts": "alert_events", "commands": "commands",
                  "notifications": "notifications", "health": "health_events",
                  "recordings": "recordings", "embeddings": "embeddings"}


def vigil_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "vigil_cli", *args]


@dataclass
class ScenarioResult:
    """What one fault scenario measured; `ok` is the verdict of the set oracle."""

    name: str
    ok: bool = False
    skipped: str | None = None
    produced: int = 0
    in_read_model: int = 0
    lost: int = 0
    duplicated: int = 0
    alerts_expected: int = 0
    alerts_raised: int = 0
    missed: int = 0
    doubled: int = 0
    unexpected: int = 0
    #: escalations whose deadline passed (by ESCALATION_SLACK_S) before the judge, while
    #: the alert was open, vs those of them that fired; missed and fired twice per level
    escalations_due: int = 0
    escalations_fired: int = 0
    escalations_missed: int = 0
    escalations_doubled: int = 0
    recovery_s: list[float] = field(default_factory=list)
    #: what a recovery should take (restart scenarios: from the process being up again
    #: to its partitions processing); a longer one is reported, not judged a failure
    recovery_target_s: float | None = None
    faults: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    duration_s: float = 0.0

    def judge(self) -> None:
        self.ok = self.skipped is None and not self.problems and not (
            self.lost or self.duplicated or self.missed or self.doubled or self.unexpected
            or self.escalations_missed or self.escalations_doubled)


#: Escalation policy of every scenario pipeline: short enough that alerts raised mid-run
#: come due before the judge, so "escalations fired vs due" is measured, not vacuous.
ESCALATION_S = 5.0
ESCALATION_MAX_LEVEL = 2
ESCALATION_TICK_S = 1.0
#: a deadline counts as due only this long before the judge (or the acknowledgement): the
#: leader's tick, and a rebalance after a fault, may delay the firing; late is not missed.
ESCALATION_SLACK_S = 12.0
#: the judge waits (at most this long) for the first deadline of every open alert to pass
#: by ESCALATION_SLACK_S: a scene played faster than real time raises alerts whose event
#: time, and so whose deadline, is still ahead of the wall clock when the frames drain.
ESCALATION_WAIT_MAX_S = 75.0
#: the judge waits (at most this long) for every scene alert's evidence and clip; a scene
#: that has finished builds its last clip partial after CLIP_WAIT_MAX_S
EVIDENCE_WAIT_MAX_S = 90.0
CLIP_WAIT_MAX_S = 30.0


class Proc:
    """One pipeline process, restartable, stopped and killed by its own PID only."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.argv, self.env, self.log = name, argv, env, log
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        fh = self.log.open("ab")
        fh.write(f"\n=== fault harness: start #{self.starts + 1} ===\n".encode())
        fh.flush()
        self.popen = subprocess.Popen(self.argv, env=self.env, stdout=fh,
                                      stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                      start_new_session=True)
        fh.close()
        self.starts += 1

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def ready_at(self, marker: bytes = b"Worker ready") -> datetime | None:
        """When the last start logged `marker` (its own log timestamp, local time), or
        None: a worker restored from changelogs can take many seconds to be ready, and
        nothing it owes can be judged before it is."""
        try:
            text = self.log.read_bytes()
        except FileNotFoundError:
            return None
        last = text.rfind(b"=== fault harness: start #")
        line = next((ln for ln in reversed(text[max(last, 0):].splitlines())
                     if marker in ln), None)
        if line is None:
            return None
        try:
            stamp = datetime.strptime(line[:23].decode(), "%Y-%m-%d %H:%M:%S,%f")
        except ValueError:
            return None
        return stamp.astimezone(UTC)  # naive = local time, as the log wrote it

    def logged_at(self, marker: bytes) -> datetime | None:
        """When the last start first logged a line containing `marker`, or None."""
        try:
            text = self.log.read_bytes()
        except FileNotFoundError:
            return None
        last = text.rfind(b"=== fault harness: start #")
        line = next((ln for ln in text[max(last, 0):].splitlines() if marker in ln), None)
        try:
            return None if line is None else datetime.strptime(
                line[:23].decode(), "%Y-%m-%d %H:%M:%S,%f").astimezone(UTC)
        except (ValueError, UnicodeDecodeError):
            return None

    def up_at(self) -> datetime | None:
        """When the last start logged its first timestamped line (the process is up:
        imported, configured, logging), or None while it has not."""
        try:
            text = self.log.read_bytes()
        except FileNotFoundError:
            return None
        last = text.rfind(b"=== fault harness: start #")
        for line in text[max(last, 0):].splitlines()[1:]:
            try:
                stamp = datetime.strptime(line[:23].decode(), "%Y-%m-%d %H:%M:%S,%f")
            except (ValueError, UnicodeDecodeError):
                continue  # Faust's banner, a traceback line
            return stamp.astimezone(UTC)
        return None

    def kill(self) -> None:
        """SIGKILL the process (its own session, by PGID = its PID) and reap it."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def signal(self, sig: int) -> None:
        """Send `sig` (e.g. SIGSTOP/SIGCONT) to the process's own group."""
        if self.popen is not None and self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.popen.pid, sig)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        if self.popen is None or self.popen.poll() is not None:
            return
        self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        try:
            os.killpg(self.popen.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()


class Pipeline:
    """Edge -> Kafka -> worker -> projector (-> API) for a set of synthetic scenarios."""

    def __init__(self, base_env: dict[str, str], run_dir: Path, scenarios: list[str],
                 name: str, partitions: int = 2, realtime: bool = False) -> None:
        from edge_producer.sim.scenario import resolve_scenario_path

        self.run_dir = run_dir
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"flt{name.replace('_', '')[:8]}{secrets.token_hex(3)}".lower()
        self.partitions = partitions
        #: pace the synthetic cameras at 1 fps like live ones (default: as fast as the
        #: pipeline takes them, which keeps the suite short)
        self.realtime = realtime
        self.env = dict(base_env)
        self.env.update({
            "VIGIL_TOPIC_PREFIX": self.prefix,
            "VIGIL_PROJECTOR_SCHEMA": self.prefix,
            "VIGIL_STATE_DIR": str(run_dir / "state"),
            "VIGIL_WORKER_WEB_PORT": str(free_port()),
            "VIGIL_API_PORT": str(free_port()),
            "VIGIL_LOG_FORMAT": "text",
            "VIGIL_ALERTS_ESCALATION_S": str(ESCALATION_S),
            "VIGIL_ALERTS_MAX_LEVEL": str(ESCALATION_MAX_LEVEL),
            "VIGIL_ALERTS_TICK_S": str(ESCALATION_TICK_S),
            "VIGIL_EVIDENCE_CLIP_WAIT_MAX_S": str(CLIP_WAIT_MAX_S),
        })
        self.scenario_paths = [resolve_scenario_path(s).resolve() for s in scenarios]
        self.procs: dict[str, Proc] = {}
        self.expected: list[dict[str, Any]] = []
        self.cameras: list[str] = []
        self.edge_file: Path | None = None
        self._engine: Any = None

    @property
    def expected_frames(self) -> int:
        """Frames the edge will capture (1 fps, as in the demo's edge config); used only
        to time the faults so they land mid-stream."""
        from edge_producer.sim.scenario import load_scenario

        return sum(int(load_scenario(p).duration_s) for p in self.scenario_paths)

    # ------------------------------------------------------------------ set-up
    def setup(self) -> None:
        """Topics, migrations, site configuration: what `vigil demo` does before it runs."""
        from schemas.topics import apply_topics
        from tools.demo import build_site

        # A scenario rule may set its own escalation_s, which wins over
        # VIGIL_ALERTS_ESCALATION_S: give every rule the suite's short one, so
        # escalations come due within a run.
        site_file, edge_file, expected = build_site(
            self.scenario_paths, self.run_dir, realtime=self.realtime,
            rule_defaults={"escalation_s": ESCALATION_S})
        self.edge_file, self.expected = edge_file, expected
        self.cameras = [c["camera_id"] for c in yaml.safe_load(edge_file.read_text())["cameras"]]
        apply_topics(self.env["KAFKA_BOOTSTRAP"], self.prefix,
                     partitions_override=self.partitions)
        self.run(vigil_argv("db", "upgrade"), "vigil db upgrade")
        self.run(vigil_argv("config", "apply", str(site_file)), "vigil config apply")
        self.add("worker", vigil_argv("worker"))
        self.add("projector", vigil_argv("project"))
        self.add("edge", vigil_argv("edge", "run", "--config", str(edge_file), "--until-done"))
        self.add("api", vigil_argv("api", "serve"))

    def run(self, argv: list[str], what: str, timeout: float = 120) -> str:
        res = subprocess.run(argv, env=self.env, capture_output=True, text=True,
                             timeout=timeout, stdin=subprocess.DEVNULL)
        if res.returncode != 0:
            raise VigilError(f"{what} failed ({res.returncode}): {res.stderr.strip()[-2000:]}")
        return res.stdout

    def add(self, name: str, argv: list[str]) -> Proc:
        self.procs[name] = Proc(name, argv, self.env, self.run_dir / f"{name}.log")
        return self.procs[name]

    def start(self, *names: str) -> None:
        for n in names:
            self.procs[n].start()

    def stop_all(self) -> None:
        for p in reversed(list(self.procs.values())):
            p.stop()
        if self._engine is not None:
            self._engine.dispose()

    def check_alive(self, *names: str) -> None:
        """A crash we did not cause is a finding: fail loudly with the log to read."""
        for n in names:
            p = self.procs[n]
            if p.popen is not None and not p.alive:
                raise VigilError(f"{n} exited with {p.popen.returncode} on its own; "
                                 f"see {p.log}")

    # ------------------------------------------------------------------ read model
    @property
    def dsn(self) -> str:
        """DATABASE_URL in libpq form (psycopg without SQLAlchemy)."""
        return "postgresql://" + self.env["DATABASE_URL"].split("://", 1)[1]

    @property
    def engine(self) -> Any:
        if self._engine is None:
            from sqlalchemy import create_engine

            url = self.env["DATABASE_URL"]
            if url.startswith(("postgresql://", "postgres://")):
                url = "postgresql+psycopg://" + url.split("://", 1)[1]
            self._engine = create_engine(url, pool_pre_ping=True)
        return self._engine

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql.replace("{s}", self.prefix)))]

    def progress(self) -> dict[str, tuple[int, int]]:
        """Per camera: (frames projected, frames analysed and projected)."""
        out: dict[str, tuple[int, int]] = {c: (0, 0) for c in self.cameras}
        try:
            frames = dict(self.query("select camera_id, count(*) from {s}.frames group by 1"))
            analysed = dict(self.query(
                "select camera_id, count(distinct frame_event_id) from {s}.frame_analyses "
                "group by 1"))
        except Exception:  # schema being created, or PostgreSQL restarting
            return out
        for c in self.cameras:
            out[c] = (int(frames.get(c, 0)), int(analysed.get(c, 0)))
        return out

    def alerts(self) -> list[dict[str, Any]]:
        """The schema's alerts with their evidence and clip (the demo's query)."""
        from tools.demo import alerts_with_evidence

        return alerts_with_evidence(self.engine, self.prefix)

    def wait_evidence(self) -> list[dict[str, Any]]:
        """The alerts, once every scene alert has its snapshots and clip or after
        EVIDENCE_WAIT_MAX_S: evidence follows its alert by a moment, and the clip of a
        scene's last alert waits up to VIGIL_EVIDENCE_CLIP_WAIT_MAX_S for its post-roll."""
        from tools.demo import missing_evidence

        deadline = time.monotonic() + EVIDENCE_WAIT_MAX_S
        alerts = self.alerts()
        while missing_evidence(alerts) and time.monotonic() < deadline:
            time.sleep(2)
            alerts = self.alerts()
        return alerts

    def analysed(self) -> int:
        """Frames analysed and projected, over all cameras: what faults are timed by."""
        return sum(a for _, a in self.progress().values())

    def drain(self, res: ScenarioResult, quick: bool = True, **kw: Any) -> None:
        """`wait_drained` with the suite's budget (420 s quick, 900 s full); a pipeline
        that does not drain is a problem of the scenario, judged like any other, and
        reported with what is missing where (`not_drained`)."""
        if not self.wait_drained(420 if quick else 900, **kw):
            self.not_drained(res)

    def not_drained(self, res: ScenarioResult) -> None:
        """Record a drain timeout with, per projected partition that is behind: the log
        end, the projector's stored offset and the rows it produced (issue 24: a
        projector whose offsets had run past lost rows sat idle while the harness
        waited in silence)."""
        try:
            behind = self.positions()
        except Exception as exc:  # the stack itself may be the fault
            behind = [f"(positions unavailable: {type(exc).__name__}: {exc})"]
        res.details["not_drained"] = behind
        prog = {c: {"frames": f, "analysed": a} for c, (f, a) in self.progress().items()}
        res.details["progress_at_timeout"] = prog
        res.problems.append("pipeline did not drain in time; partitions: "
                            + ("; ".join(map(str, behind[:12])) or "all empty")
                            + f"; per camera (frames, analysed): {prog}")

    def positions(self) -> list[str]:
        """Every projected partition that holds data, those behind first: "topic[p] end E
        stored S rows R" (rows: of the topic's one-row-per-event table; a duplicate or a
        transaction marker takes an offset and makes no row). BEHIND: the projector's
        stored offset is short of the log end; a worker that is behind shows as a short
        log of its output topic (detections) instead."""
        from projections.check import partition_positions

        parts = partition_positions(self.dsn, self.prefix, self.prefix,
                                    self.env["KAFKA_BOOTSTRAP"])
        rows: dict[tuple[str, int], int] = {}
        for suffix, table in _ROWS_OF_TOPIC.items():
            try:
                got = self.query(f"select log_partition, count(*) from {{s}}.{table} "
                                 "group by 1")
            except Exception:
                continue
            for part, n in got:
                rows[(f"{self.prefix}.{suffix}", int(part))] = int(n)
        behind, caught_up = [], []
        for pr in parts:
            if pr.log_end <= pr.log_start:
                continue  # nothing retained in it
            n = rows.get((pr.topic, pr.partition))
            line = (f"{pr.topic.split('.', 1)[1]}[{pr.partition}] end {pr.log_end} "
                    f"stored {pr.stored} rows {'-' if n is None else n}")
            if max(pr.stored, pr.log_start) < pr.log_end:
                behind.append("BEHIND " + line)
            else:
                caught_up.append(line)
        return behind + caught_up

    def wait_drained(self, timeout: float, live: tuple[str, ...] = ("worker", "projector"),
                     settle_polls: int = 2, every_camera: bool = True) -> bool:
        """Until the edge has exited and every projected frame is analysed, stable for a
        few polls (so a late duplicate still shows up); False on timeout. `every_camera`:
        each camera must have frames (False where the edge may declare them all dropped)."""
        deadline = time.monotonic() + timeout
        last: Any = None
        quiet = 0
        while time.monotonic() < deadline:
            time.sleep(2)
            self.check_alive(*live)
            edge = self.procs["edge"]
            prog = self.progress()
            try:
                n_alerts = len(self.alerts())
            except Exception:
                n_alerts = -1
            drained = (not edge.alive and all((f > 0 or not every_camera) and a >= f
                                              for f, a in prog.values()))
            snap = (prog, n_alerts)
            quiet = quiet + 1 if drained and snap == last else 0
            last = snap
            if quiet >= settle_polls:
                return True
        return False

    def wait_for(self, pred: Any, timeout: float, what: str) -> float:
        """Seconds until `pred()` holds; raises after `timeout` (a stuck recovery)."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            try:
                if pred():
                    return time.monotonic() - t0
            except Exception:
                pass
            time.sleep(0.5)
        raise VigilError(f"timed out after {timeout:.0f} s waiting for {what}")

    # ------------------------------------------------------------------ the log
    def read_topic(self, suffix: str, decode: bool = True) -> list[Any]:
        """Every record of a topic from offset 0 to the current end (all partitions)."""
        from confluent_kafka import Consumer, TopicPartition

        from schemas.codec import default_codec
        from schemas.topics import topic_name

        topic = topic_name(suffix, self.prefix)
        c = Consumer({"bootstrap.servers": self.env["KAFKA_BOOTSTRAP"],
                      "group.id": f"faults-oracle-{secrets.token_hex(4)}",
                      "enable.auto.commit": False, "auto.offset.reset": "earliest",
                      "isolation.level": "read_uncommitted"})
        out: list[Any] = []
        try:
            md = c.list_topics(topic, timeout=10)
            parts = list(md.topics[topic].partitions)
            ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                    for p in parts}
            todo = {p for p, e in ends.items() if e > 0}
            c.assign([TopicPartition(topic, p, 0) for p in todo])
            deadline = time.monotonic() + 60
            while todo and time.monotonic() < deadline:
                msg = c.poll(1.0)
                if msg is None or msg.error():
                    continue
                if decode:
                    try:
                        out.append(default_codec().decode(msg.value()))
                    except Exception:
                        out.append(None)  # poison: counted by the scenario that put it there
                else:
                    out.append(msg)
                if msg.offset() + 1 >= ends[msg.partition()]:
                    todo.discard(msg.partition())
            if todo:
                raise VigilError(f"could not read {topic} to its end")
        finally:
            c.close()
        return out

    # ------------------------------------------------------------------ the oracle
    def judge_offsets(self, res: ScenarioResult) -> None:
        """The projector's invariant, on every partition of every projected topic:
        every event below its stored offset has its row (or was dead-lettered). The set
        oracle compares what reached the read model with the log; this one also catches
        a stored offset that ran past a hole (issue 24's postgres_restart) even where
        the scenario's own counts would not (docs/faults.md)."""
        from projections.check import check_schema

        rep = check_schema(self.dsn, self.prefix, self.prefix,
                           self.env["KAFKA_BOOTSTRAP"], timeout_s=120)
        res.details["offset_check"] = {"checked": rep.checked,
                                       "dead_lettered": rep.dead_lettered,
                                       "missing": rep.missing_total}
        if not rep.ok:
            res.lost += rep.missing_total
            res.details["missing_below_stored_offset"] = [list(m) for m in rep.missing[:50]]
            where = [f"{t.split('.', 1)[1]}[{p}]@{o}" for t, p, o, *_ in rep.missing[:10]]
            res.problems.append(f"{rep.missing_total} event(s) below the projector's stored "
                                f"offsets have no row: {where}")

    def judge_frames(self, res: ScenarioResult, check_alerts: bool = True,
                     gaps_declared: bool = False, exclude_ids: set[str] | None = None) -> None:
        """Log vs read model: frames by event id and per-camera sequence; analyses by
        frame event id; alerts against the scenarios' ground truth. `gaps_declared`: the
        scenario judges sequence gaps itself (against the edge's declared drops);
        `exclude_ids`: frame events the scenario injected as poison, not traffic."""
        from schemas.events import FrameCaptured
        from tools.demo import check_expected

        skip = exclude_ids or set()
        logged = [e for e in self.read_topic("frames")
                  if isinstance(e, FrameCaptured) and e.event_id not in skip]
        log_ids = {e.event_id for e in logged}
        rm = [r for r in self.query("select event_id, camera_id, sequence from {s}.frames")
              if r[0] not in skip]
        rm_ids = {r[0] for r in rm}
        res.produced = len(log_ids)
        res.in_read_model = len(rm_ids)
        lost = log_ids - rm_ids
        phantom = rm_ids - log_ids
        # a sequence number that occurs twice in the log or the read model is a duplicate
        # frame (e.g. an edge that re-sent a frame under a new event id after a restart)
        ids_per_seq: dict[tuple[str, int], set[str]] = {}
        for e in logged:
            ids_per_seq.setdefault((e.camera_id, e.sequence), set()).add(e.event_id)
        for r in rm:
            ids_per_seq.setdefault((r[1], r[2]), set()).add(r[0])
        dup_seq = sorted(k for k, ids in ids_per_seq.items() if len(ids) > 1)
        seq_rm = {(r[1], r[2]) for r in rm}
        gaps: dict[str, list[int]] = {}
        for cam in self.cameras:
            seqs = sorted({s for (c, s) in seq_rm if c == cam})
            if not seqs:
                gaps[cam] = [-1]
                continue
            missing = sorted(set(range(1, seqs[-1] + 1)) - set(seqs))
            if missing:
                gaps[cam] = missing[:20]
        analyses = Counter(r[0] for r in self.query(
            "select frame_event_id from {s}.frame_analyses") if r[0] not in skip)
        not_analysed = log_ids - set(analyses)
        analysed_twice = {k for k, n in analyses.items() if n > 1}
        res.lost = len(lost) + len(not_analysed)
        res.duplicated = len(dup_seq) + len(analysed_twice) + len(phantom)
        res.details.update({
            "frames_in_log": len(log_ids), "frames_in_read_model": len(rm_ids),
            "frames_lost": len(lost), "frames_not_analysed": len(not_analysed),
            "frames_analysed_twice": len(analysed_twice),
            "duplicate_sequences": [list(k) for k in dup_seq[:20]],
            "sequence_gaps": gaps,
        })
        if gaps and not gaps_declared:
            res.problems.append(f"sequence gaps in the read model: {gaps}")
        self.judge_offsets(res)
        if check_alerts:
            alerts = self.wait_evidence()
            problems = check_expected(self.expected, alerts)
            res.alerts_expected = len(self.expected)
            res.alerts_raised = len([a for a in alerts if (a["camera_id"], a["rule_id"]) in
                                     {(e["camera_id"], e["rule_id"]) for e in self.expected}])
            res.missed = sum(p.startswith("missing") for p in problems)
            res.doubled = sum(p.startswith("doubled") for p in problems)
            res.unexpected = sum(p.startswith("unexpected") for p in problems)
            if problems:
                res.details["alert_problems"] = problems
            # an alert whose snapshot or clip a crash lost is a loss like a frame's
            res.problems += [p for p in problems if p.startswith("no evidence")]
            self.judge_escalations(res)

    def judge_escalations(self, res: ScenarioResult) -> None:
        """Escalations fired vs due, from the alerts topic.

        The first deadline is the later of the hit's event time and the moment the worker
        raised the alert (the AlertRaised record's timestamp) plus ESCALATION_S; each next
        one runs from when the previous level actually fired (agents/alert_state.py). An
        acknowledgement or resolution stops the chain. Only deadlines ESCALATION_SLACK_S
        before the judge count as due, so a late firing is not called missed."""
        from datetime import UTC, datetime, timedelta

        from schemas.codec import default_codec
        from schemas.events import (
            AlertAcknowledged,
            AlertEscalated,
            AlertRaised,
            AlertResolved,
        )

        codec = default_codec()
        step, slack = timedelta(seconds=ESCALATION_S), timedelta(seconds=ESCALATION_SLACK_S)

        def read() -> tuple[dict[str, datetime], dict[str, list[AlertEscalated]],
                            dict[str, datetime]]:
            raised: dict[str, datetime] = {}
            fired: dict[str, list[AlertEscalated]] = {}
            stopped: dict[str, datetime] = {}
            for msg in self.read_topic("alerts", decode=False):
                try:
                    e = codec.decode(msg.value())
                except Exception:
                    continue
                ts = datetime.fromtimestamp(msg.timestamp()[1] / 1000, UTC)
                if isinstance(e, AlertRaised):
                    raised.setdefault(e.alert_id, max(e.occurred_at, ts))
                elif isinstance(e, AlertEscalated):
                    fired.setdefault(e.alert_id, []).append(e)
                elif isinstance(e, AlertAcknowledged | AlertResolved):
                    stopped[e.alert_id] = min(stopped.get(e.alert_id, ts), ts)
            return raised, fired, stopped

        raised, fired, stopped = read()
        first_due = [at + step + slack for a, at in raised.items() if a not in stopped]
        # A deadline that passed while the worker was down (killed, restoring) is owed
        # from the moment it is ready again: give it the same slack from then.
        worker = self.procs.get("worker")
        ready = worker.ready_at() if worker is not None else None
        if first_due and ready is not None:
            first_due.append(ready + slack)
        if first_due:
            wait = (max(first_due) - datetime.now(UTC)).total_seconds()
            if wait > 0:
                time.sleep(min(wait + 1.0, ESCALATION_WAIT_MAX_S))
                raised, fired, stopped = read()
        judged_at = datetime.now(UTC)
        due = matched = missed = doubled = 0
        for alert_id, raised_at in raised.items():
            levels = [e.level for e in fired.get(alert_id, [])]
            doubled += len(levels) - len(set(levels))
            by_level = {e.level: e for e in fired.get(alert_id, [])}
            cutoff = min(judged_at, stopped.get(alert_id, judged_at)) - slack
            deadline = raised_at + step
            for level in range(1, ESCALATION_MAX_LEVEL + 1):
                if deadline > cutoff:
                    break
                due += 1
                if level not in by_level:
                    missed += 1
                    res.problems.append(f"escalation {level} of alert {alert_id} was due "
                                        f"at {deadline.isoformat()} and never fired")
                    break
                matched += 1
                deadline = by_level[level].occurred_at + step
        res.escalations_due, res.escalations_fired = due, matched
        res.escalations_missed, res.escalations_doubled = missed, doubled
        res.details["escalations_fired_total"] = sum(len(v) for v in fired.values())
        if doubled:
            res.problems.append(f"{doubled} escalation level(s) fired twice")
