"""`vigil topics apply|list`: make the broker match the topic catalog."""

from __future__ import annotations

import argparse

from schemas.topics import CATALOG, apply_topics
from vigil.settings import get_settings


def _apply(args: argparse.Namespace) -> int:
    s = get_settings()
    result = apply_topics(s.kafka_bootstrap, s.topic_prefix, args.partitions)
    for name, status in result.items():
        print(f"{status:8} {name}")
    return 0


def _list(args: argparse.Namespace) -> int:
    prefix = get_settings().topic_prefix
    for t in CATALOG:
        kind = "compacted" if t.compacted else "delete"
        print(f"{t.name(prefix):24} key={t.key:28} partitions={t.partitions:<3} {kind:9} "
              f"{', '.join(t.events)}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("topics", help="create/update the Kafka topics of the catalog")
    tsub = p.add_subparsers(dest="topics_command", required=True)
    a = tsub.add_parser("apply", help="create missing topics, update changed configs")
    a.add_argument("--partitions", type=int, default=None, help="override partition counts")
    a.set_defaults(func=_apply)
    ls = tsub.add_parser("list", help="print the catalog")
    ls.set_defaults(func=_list)
