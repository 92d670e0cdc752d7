"""`vigil config validate|apply site.yaml`: check a site file; make vigil.config match it.

The compacted config topic *is* the configuration state, so `apply` reads the topic to
its end, diffs it against the file by content (envelope fields ignored), and publishes
only what changed: new/changed entities as their Configured event, removed ones as an
EntityDeleted followed by a tombstone on the same key (the tombstone comes last, so
compaction leaves the entity deleted). Applying the same file twice publishes nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import uuid
from typing import Any

from schemas.config_state import read_config_state
from schemas.events import EntityDeleted, Event
from schemas.producer import EventProducer
from schemas.site_config import SiteConfig, config_events, load_site
from schemas.topics import topic_name
from vigil.errors import VigilError

_ENVELOPE = {"event_id", "event_type", "occurred_at", "producer", "causation_id",
             "correlation_id"}


def content(event: Event) -> dict[str, Any]:
    """An event's payload without its envelope: what "changed" means for config."""
    return {k: v for k, v in dataclasses.asdict(event).items() if k not in _ENVELOPE}


@dataclasses.dataclass
class Plan:
    upserts: list[tuple[str, Event]]
    deletes: list[str]
    unchanged: int


def plan(site: SiteConfig, current: dict[str, Event | None]) -> Plan:
    """What to publish to turn `current` into the file's state."""
    apply_id = str(uuid.uuid4())
    desired = config_events(site, correlation_id=apply_id)
    upserts, unchanged = [], 0
    for key, ev in desired:
        have = current.get(key)
        if have is not None and type(have) is type(ev) and content(have) == content(ev):
            unchanged += 1
        else:
            upserts.append((key, ev))
    wanted = {k for k, _ in desired}
    deletes = sorted(k for k, v in current.items() if v is not None and k not in wanted)
    return Plan(upserts, deletes, unchanged)


def publish(p: Plan, producer: EventProducer | None = None) -> None:
    producer = producer or EventProducer()
    corr = p.upserts[0][1].correlation_id if p.upserts else str(uuid.uuid4())
    for key, ev in p.upserts:
        producer.send("config", key, ev)
    for key in p.deletes:
        kind, _, entity_id = key.partition("/")
        producer.send("config", key, EntityDeleted.create(
            producer="vigil-config/1", correlation_id=corr, entity_kind=kind,
            entity_id=entity_id))
        producer.send_raw(topic_name("config"), key, None)
    left = producer.flush()
    if left:
        raise VigilError(f"{left} config events were not delivered")


def apply_site(site: SiteConfig) -> Plan:
    """Diff the file against the topic and publish the difference; returns the plan."""
    p = plan(site, read_config_state())
    publish(p)
    return p


def _validate(args: argparse.Namespace) -> int:
    site = load_site(args.file)
    print(f"{args.file}: ok ({len(site.cameras)} cameras, {len(site.zones)} zones, "
          f"{len(site.lines)} lines, {len(site.rules)} rules)")
    return 0


def _apply(args: argparse.Namespace) -> int:
    site = load_site(args.file)
    p = plan(site, read_config_state())
    for key, _ in p.upserts:
        print(f"upsert  {key}")
    for key in p.deletes:
        print(f"delete  {key}")
    if args.dry_run:
        print("dry run: nothing published")
        return 0
    publish(p)
    print(f"applied: {len(p.upserts)} upserted, {len(p.deletes)} deleted, "
          f"{p.unchanged} unchanged")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate a site file or apply it to vigil.config")
    csub = p.add_subparsers(dest="config_command", required=True)
    v = csub.add_parser("validate", help="check a site file; nothing is published")
    v.add_argument("file")
    v.set_defaults(func=_validate)
    a = csub.add_parser("apply", help="publish the difference between the file and the topic")
    a.add_argument("file")
    a.add_argument("--dry-run", action="store_true", help="show the plan only")
    a.set_defaults(func=_apply)
