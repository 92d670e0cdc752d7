"""The committed `.avsc` files are the contract: they parse, the Python records match them
field for field, every event carries the same envelope first, and every committed previous
version stays readable by today's reader schema (backward compatibility)."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import types
import typing
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import avro.compatibility
import avro.schema
import fastavro
import pytest
from avro_reference import to_avro_dict
from event_strategies import avro_datum
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas.codec import (
    HISTORY_DIR,
    SCHEMA_DIR,
    SINGLE_OBJECT_MAGIC,
    Codec,
    from_avro_dict,
    load_schema_file,
    schema_fingerprint,
)
from schemas.events import EVENT_TYPES, NAMESPACE, Event, StreamDown, ZoneEntered
from schemas.topics import CATALOG

ENVELOPE = (
    "event_id", "event_type", "occurred_at", "producer", "causation_id", "correlation_id",
)
CURRENT = sorted(SCHEMA_DIR.glob("*.avsc"))
HISTORY = sorted(HISTORY_DIR.glob("*.avsc"))
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
_NO_DEFAULT = object()

pytestmark = pytest.mark.filterwarnings("error")


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


# ----------------------------------------------------------------- every file parses


@pytest.mark.parametrize("path", CURRENT + HISTORY, ids=_ids(CURRENT + HISTORY))
def test_avsc_parses_with_fastavro_and_apache_avro(path: Path) -> None:
    raw = load_schema_file(path)
    fastavro.parse_schema(raw, _write_hint=False)
    parsed = avro.schema.parse(path.read_text(encoding="utf-8"))
    assert parsed.type == "record"
    assert parsed.namespace == NAMESPACE
    assert parsed.name == path.name.split(".")[0], "file name must be the record name"


def test_one_schema_per_event_type_and_no_orphans() -> None:
    assert {p.stem for p in CURRENT} == set(EVENT_TYPES)
    assert {p.name.split(".")[0] for p in HISTORY} <= set(EVENT_TYPES)


def test_every_current_schema_has_a_committed_previous_version() -> None:
    # Without a v1 the backward-compatibility test below has nothing to check.
    assert {p.name.split(".")[0] for p in HISTORY} == set(EVENT_TYPES)


def test_every_event_type_is_on_exactly_one_public_topic() -> None:
    # Internal topics (public=False) may repartition public events; the public home of
    # an event type, where downstream consumers find it, is unique.
    seen: dict[str, str] = {}
    for topic in CATALOG:
        if not topic.public:
            continue
        for name in topic.events:
            assert name not in seen, f"{name} declared on {seen[name]} and {topic.suffix}"
            seen[name] = topic.suffix
    assert set(seen) == set(EVENT_TYPES)
    internal = {n for t in CATALOG if not t.public for n in t.events}
    assert internal <= set(EVENT_TYPES), "internal topics carry only known event types"


# ----------------------------------------------------------------- code == schema


def _py_default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return _NO_DEFAULT
    if dataclasses.is_dataclass(value):
        return to_avro_dict(value)
    if isinstance(value, list):
        return [to_avro_dict(v) if dataclasses.is_dataclass(v) else v for v in value]
    return value


def _py_type(tp: Any, default: Any) -> Any:
    """The Avro type (normal form) a Python type hint must have in the .avsc."""
    if typing.get_origin(tp) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        assert len(args) == 1 and len(typing.get_args(tp)) == 2, f"unsupported union {tp}"
        inner = _py_type(args[0], _NO_DEFAULT)
        # Avro: a union's default must match its first branch.
        if default is _NO_DEFAULT or default is None:
            return ["null", inner]
        return [inner, "null"]
    if typing.get_origin(tp) is list:
        (item,) = typing.get_args(tp)
        return {"type": "array", "items": _py_type(item, _NO_DEFAULT)}
    if typing.get_origin(tp) is typing.Literal:
        # a closed vocabulary stays an Avro string: a new value is then no schema change
        assert all(isinstance(v, str) for v in typing.get_args(tp)), f"non-string {tp}"
        return "string"
    if dataclasses.is_dataclass(tp):
        return _py_record(tp)  # type: ignore[arg-type]
    simple = {str: "string", int: "long", float: "double", bool: "boolean", bytes: "bytes"}
    if tp in simple:
        return simple[tp]
    if tp is datetime:
        return {"type": "long", "logicalType": "timestamp-micros"}
    raise AssertionError(f"no Avro mapping for Python type {tp!r}")


def _py_record(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    fields = []
    for f in dataclasses.fields(cls):
        default = _py_default(f)
        out = {"name": f.name, "type": _py_type(hints[f.name], default)}
        if default is not _NO_DEFAULT:
            out["default"] = default
        fields.append(out)
    return {"type": "record", "name": f"{NAMESPACE}.{cls.__name__}", "fields": fields}


def _avsc_type(t: Any, ns: str, named: dict[str, Any]) -> Any:
    """An .avsc type in the same normal form: no docs, named references expanded."""
    if isinstance(t, str):
        if t in PRIMITIVES:
            return t
        return named[t if "." in t else f"{ns}.{t}"]
    if isinstance(t, list):
        return [_avsc_type(x, ns, named) for x in t]
    kind = t["type"]
    if kind == "record":
        rns = t.get("namespace", ns)
        full = t["name"] if "." in t["name"] else f"{rns}.{t['name']}"
        fields = []
        for f in t["fields"]:
            out = {"name": f["name"], "type": _avsc_type(f["type"], rns, named)}
            if "default" in f:
                out["default"] = f["default"]
            fields.append(out)
        named[full] = {"type": "record", "name": full, "fields": fields}
        return named[full]
    if kind == "array":
        return {"type": "array", "items": _avsc_type(t["items"], ns, named)}
    if "logicalType" in t:
        return {"type": kind, "logicalType": t["logicalType"]}
    if kind in PRIMITIVES:
        return kind
    raise AssertionError(f"unexpected Avro type {t!r}")


def schema_mismatches(cls: type, avsc: dict[str, Any]) -> list[str]:
    """Every way in which a Python record and an .avsc record disagree (empty: they agree)."""
    code = _py_record(cls)["fields"]
    schema = _avsc_type(avsc, NAMESPACE, {})["fields"]
    problems = []
    code_names = [f["name"] for f in code]
    schema_names = [f["name"] for f in schema]
    if code_names != schema_names:
        problems.append(f"field names/order: code {code_names} != schema {schema_names}")
    by_name = {f["name"]: f for f in schema}
    for f in code:
        other = by_name.get(f["name"])
        if other is None:
            continue
        if f["type"] != other["type"]:
            problems.append(f"{f['name']}: type in code {f['type']} != schema {other['type']}")
        if f.get("default", _NO_DEFAULT) != other.get("default", _NO_DEFAULT):
            problems.append(
                f"{f['name']}: default in code {f.get('default', '<none>')!r} "
                f"!= schema {other.get('default', '<none>')!r}"
            )
    return problems


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_python_record_matches_its_avsc(name: str) -> None:
    cls = EVENT_TYPES[name]
    avsc = load_schema_file(SCHEMA_DIR / f"{name}.avsc")
    assert f"{avsc['namespace']}.{avsc['name']}" == f"{NAMESPACE}.{name}"
    assert schema_mismatches(cls, avsc) == []


@dataclass(frozen=True, slots=True, kw_only=True)
class _ZoneEnteredReordered(Event):
    camera_id: str
    track_id: str
    zone_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _ZoneEnteredOptional(Event):
    camera_id: str
    zone_id: str | None = None
    track_id: str


@dataclass(frozen=True, slots=True, kw_only=True)
class _ZoneEnteredExtra(Event):
    camera_id: str
    zone_id: str
    track_id: str
    floor: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class _StreamDownOtherDefault(Event):
    edge_id: str
    camera_id: str
    reason: str
    attempt: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class _StreamDownFloatAttempt(Event):
    edge_id: str
    camera_id: str
    reason: str
    attempt: float = 0


@pytest.mark.parametrize(
    ("cls", "schema_of", "expect"),
    [
        (_ZoneEnteredReordered, ZoneEntered, "order"),
        (_ZoneEnteredOptional, ZoneEntered, "zone_id: type"),
        (_ZoneEnteredExtra, ZoneEntered, "order"),
        (_StreamDownOtherDefault, StreamDown, "attempt: default"),
        (_StreamDownFloatAttempt, StreamDown, "attempt: type"),
    ],
)
def test_the_matching_check_catches_drift(cls: type, schema_of: type, expect: str) -> None:
    avsc = load_schema_file(SCHEMA_DIR / f"{schema_of.__name__}.avsc")
    problems = schema_mismatches(cls, avsc)
    assert any(expect in p for p in problems), problems


# ----------------------------------------------------------------- the envelope


def test_envelope_fields_come_first_and_are_identical_everywhere() -> None:
    reference = load_schema_file(CURRENT[0])["fields"][: len(ENVELOPE)]
    assert tuple(f["name"] for f in reference) == ENVELOPE
    for path in CURRENT + HISTORY:
        envelope = load_schema_file(path)["fields"][: len(ENVELOPE)]
        assert envelope == reference, f"{path.name}: envelope differs from {CURRENT[0].name}"


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_python_records_start_with_the_envelope(name: str) -> None:
    cls = EVENT_TYPES[name]
    assert issubclass(cls, Event)
    fields = tuple(f.name for f in dataclasses.fields(cls))
    assert fields[: len(ENVELOPE)] == ENVELOPE


# ----------------------------------------------------------------- backward compatibility


def _history_pairs() -> list[tuple[Path, Path]]:
    pairs = []
    for old in HISTORY:
        name = str(load_schema_file(old)["name"]).rsplit(".", 1)[-1]
        pairs.append((old, SCHEMA_DIR / f"{name}.avsc"))
    return pairs


def incompatibilities(reader_raw: dict[str, Any], writer_raw: dict[str, Any]) -> set[str]:
    """Apache Avro's reader/writer compatibility check (empty set: compatible)."""
    result = avro.compatibility.ReaderWriterCompatibilityChecker().get_compatibility(
        avro.schema.parse(json.dumps(reader_raw)), avro.schema.parse(json.dumps(writer_raw))
    )
    if result.compatibility is avro.compatibility.SchemaCompatibilityType.compatible:
        return set()
    return {f"{loc}: {msg}" for loc, msg in zip(sorted(result.locations), sorted(result.messages),
                                                 strict=False)} or {"incompatible"}


def read_old_with_new(datum: Any, writer_raw: dict[str, Any], reader_raw: dict[str, Any]) -> Any:
    """Write `datum` with the old schema and read it with the current one (fastavro)."""
    writer = fastavro.parse_schema(copy.deepcopy(writer_raw), _write_hint=False)
    reader = fastavro.parse_schema(copy.deepcopy(reader_raw), _write_hint=False)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, writer, datum)
    buf.seek(0)
    return fastavro.schemaless_reader(buf, writer, reader)


@pytest.mark.parametrize(("old", "current"), _history_pairs(),
                         ids=[p.name for p, _ in _history_pairs()])
def test_current_schema_can_read_every_committed_version(old: Path, current: Path) -> None:
    assert incompatibilities(load_schema_file(current), load_schema_file(old)) == set()


def _written_part(read: Any, written: Any) -> Any:
    """`read` cut down to the fields `written` has, at every depth: a record nested in a
    newer schema (a heartbeat's StreamStatus) reads back with the new fields' defaults."""
    if isinstance(read, dict) and isinstance(written, dict):
        return {k: _written_part(read.get(k), v) for k, v in written.items()}
    if isinstance(read, list) and isinstance(written, list) and len(read) == len(written):
        return [_written_part(r, w) for r, w in zip(read, written, strict=True)]
    return read


@pytest.mark.parametrize(("old", "current"), _history_pairs(),
                         ids=[p.name for p, _ in _history_pairs()])
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_data_written_with_a_committed_version_decodes_today(
    old: Path, current: Path, data: st.DataObject
) -> None:
    writer_raw, reader_raw = load_schema_file(old), load_schema_file(current)
    writer = fastavro.parse_schema(copy.deepcopy(writer_raw), _write_hint=False)
    datum = data.draw(avro_datum(writer))
    record = read_old_with_new(datum, writer_raw, reader_raw)
    reader_fields = {f["name"]: f for f in reader_raw["fields"]}
    for name, value in datum.items():
        if name in reader_fields:
            assert _written_part(record[name], value) == value, name
    for name, f in reader_fields.items():
        if name not in datum:
            assert record[name] == f["default"], f"{name} should take its default"
    # ... and today's Python record is built from it, through the codec's own path:
    # single-object encoding with the *old* schema's fingerprint.
    name = current.stem
    buf = io.BytesIO()
    buf.write(SINGLE_OBJECT_MAGIC + schema_fingerprint(writer))
    fastavro.schemaless_writer(buf, writer, datum)
    event = Codec().decode(buf.getvalue())
    assert type(event) is EVENT_TYPES[name]
    assert event == from_avro_dict(name, record)


def _sample_zone_entered() -> dict[str, Any]:
    event = ZoneEntered.create(
        producer="test/0", occurred_at=datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
        camera_id="cam-1", zone_id="door", track_id="t1",
    )
    return to_avro_dict(event)


def test_compatibility_check_catches_a_new_required_field() -> None:
    """A synthetic v2 that adds a field without a default cannot read v1 data."""
    v1 = load_schema_file(HISTORY_DIR / "ZoneEntered.v1.avsc")
    v2 = copy.deepcopy(load_schema_file(SCHEMA_DIR / "ZoneEntered.avsc"))
    v2["fields"].append({"name": "floor", "type": "long"})
    assert incompatibilities(v2, v1), "Apache Avro should report the missing default"
    with pytest.raises(fastavro.read.SchemaResolutionError, match="floor"):
        read_old_with_new(_sample_zone_entered(), v1, v2)


def test_compatibility_check_catches_a_changed_type_and_accepts_a_defaulted_field() -> None:
    v1 = load_schema_file(HISTORY_DIR / "ZoneEntered.v1.avsc")
    retyped = copy.deepcopy(load_schema_file(SCHEMA_DIR / "ZoneEntered.avsc"))
    for f in retyped["fields"]:
        if f["name"] == "track_id":
            f["type"] = "long"
    assert incompatibilities(retyped, v1)
    with pytest.raises(fastavro.read.SchemaResolutionError):
        read_old_with_new(_sample_zone_entered(), v1, retyped)

    defaulted = copy.deepcopy(load_schema_file(SCHEMA_DIR / "ZoneEntered.avsc"))
    defaulted["fields"].append({"name": "floor", "type": "long", "default": 0})
    assert incompatibilities(defaulted, v1) == set()
    assert read_old_with_new(_sample_zone_entered(), v1, defaulted)["floor"] == 0


def test_codec_upgrades_an_old_version_to_todays_record(tmp_path: Path) -> None:
    """A store whose history holds an older StreamDown (without `attempt`) decodes values
    written with it into today's record, `attempt` taking its default."""
    from schemas.codec import SchemaStore

    old = copy.deepcopy(load_schema_file(SCHEMA_DIR / "StreamDown.avsc"))
    old["fields"] = [f for f in old["fields"] if f["name"] != "attempt"]
    history = tmp_path / "history"
    history.mkdir()
    (history / "StreamDown.v0.avsc").write_text(json.dumps(old), encoding="utf-8")
    codec = Codec(store=SchemaStore(SCHEMA_DIR, history))

    writer = fastavro.parse_schema(old, _write_hint=False)
    event = StreamDown.create(producer="edge/0", edge_id="e1", camera_id="c1", reason="eof",
                              attempt=0)
    datum = to_avro_dict(event)
    del datum["attempt"]
    buf = io.BytesIO(SINGLE_OBJECT_MAGIC + schema_fingerprint(writer))
    buf.seek(0, io.SEEK_END)
    fastavro.schemaless_writer(buf, writer, datum)
    assert codec.decode(buf.getvalue()) == event
    assert Codec().decode(codec.encode(event)) == event
