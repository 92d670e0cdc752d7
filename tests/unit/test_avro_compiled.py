"""schemas.avro_compiled: the compiled encoder writes exactly fastavro's bytes and the
compiled decoder reads fastavro's bytes into exactly the records fastavro + the builder
give, for every event type; corrupt bodies and wrong-typed values only ever raise
CodecError (through the codec); unsupported schema features fail at compile time."""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from avro_reference import to_avro_dict
from event_strategies import event_strategy
from hypothesis import HealthCheck, given, settings

from schemas.avro_compiled import AvroDecodeError, UnsupportedSchemaError, compile_record
from schemas.codec import Codec, CodecError, default_store, from_avro_dict
from schemas.events import (
    EVENT_TYPES,
    AppearanceErased,
    Detection,
    Event,
    FrameAnalyzed,
    FrameCaptured,
    RuleTriggered,
    ZoneEntered,
)

EXAMPLES = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])
T0 = datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC)


def _fastavro_body(event: Event) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, default_store().readers[type(event).__name__],
                               to_avro_dict(event))
    return buf.getvalue()


def _fastavro_event(name: str, body: bytes) -> Event:
    schema = default_store().readers[name]
    return from_avro_dict(name, fastavro.schemaless_reader(io.BytesIO(body), schema, None))


def _compiled(name: str) -> Any:
    return default_store().compiled[name]


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_compiled_codec_agrees_with_fastavro(name: str) -> None:
    compiled = _compiled(name)

    @EXAMPLES
    @given(event=event_strategy(EVENT_TYPES[name]))
    def check(event: Event) -> None:
        reference = _fastavro_body(event)
        assert compiled.encode(event) == reference
        decoded = compiled.decode(reference)
        assert decoded == _fastavro_event(name, reference)
        assert decoded == event
        assert type(decoded) is type(event)
        assert compiled.decode(memoryview(b"xx" + reference), 2) == event

    check()


def _frame(**changes: Any) -> FrameAnalyzed:
    event = FrameAnalyzed.create(
        producer="p", occurred_at=T0, edge_id="e", camera_id="c", frame_sequence=7,
        width=640, height=480, skipped=False, detector_model="m", detector_version="1",
        detections=[Detection(detection_id=f"d{i}", label="person", score=0.5 + i / 100,
                              x1=0.1, y1=0.2, x2=0.3, y2=0.4, has_embedding=i % 2 == 0)
                    for i in range(3)],
    )
    return event.evolve(**changes)


@pytest.mark.parametrize(
    "event",
    [
        _frame(frame_sequence=-(2**63), width=2**63 - 1, height=8191, inference_ms=-0.0),
        _frame(frame_sequence=8192, width=-8193, height=-8192, edge_id="é" * 5000),
        _frame(detections=[Detection(detection_id=str(i), label="x", score=1e308, x1=-1e-308,
                                     y1=float("inf"), x2=float("-inf"), y2=5e-324)
                           for i in range(9000)]),
        AppearanceErased.create(producer="p", occurred_at=T0, detection_ids=["a"] * 70,
                                snapshot_refs=[], requested_by="x" * 64, reason="y" * 63),
        FrameCaptured.create(producer="p", occurred_at=T0, edge_id="e", camera_id="c",
                             sequence=1, width=1, height=1, motion_score=0.0,
                             jpeg=bytes(range(256)) * 40),
    ],
    ids=["long-extremes", "long-string", "many-items-and-odd-doubles", "lengths-63-64",
         "big-bytes"],
)
def test_edge_values_match_fastavro(event: Event) -> None:
    compiled = _compiled(type(event).__name__)
    reference = _fastavro_body(event)
    assert compiled.encode(event) == reference
    assert compiled.decode(reference) == event


def test_timestamps_match_fastavro_for_any_offset_and_decode_as_aware_utc() -> None:
    for occurred_at in (
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 5, 1, 23, 30, 0, 1, tzinfo=timezone(timedelta(hours=-7, minutes=-30))),
    ):
        event = ZoneEntered.create(producer="p", occurred_at=occurred_at, camera_id="c",
                                   zone_id="z", track_id="t")
        reference = _fastavro_body(event)
        assert _compiled("ZoneEntered").encode(event) == reference
        decoded = _compiled("ZoneEntered").decode(reference)
        assert decoded.occurred_at == occurred_at
        assert decoded.occurred_at.tzinfo is UTC
        assert decoded == _fastavro_event("ZoneEntered", reference)


def test_negative_block_counts_from_other_writers_decode() -> None:
    """Avro lets a writer give an array block as -count followed by its byte size (Java's
    blocking encoder does); fastavro reads it, so must we."""
    event = AppearanceErased.create(producer="p", occurred_at=T0, detection_ids=["a", "bc"],
                                    snapshot_refs=["s"], requested_by="r", reason="x")
    plain = _fastavro_body(event)
    items = b"\x02a\x04bc"
    assert items in plain
    blocked = plain.replace(b"\x04" + items + b"\x00",
                            b"\x01" + bytes([2 * len(b"\x02a")]) + b"\x02a"
                            + b"\x01" + bytes([2 * len(b"\x04bc")]) + b"\x04bc" + b"\x00", 1)
    assert blocked != plain
    assert _fastavro_event("AppearanceErased", blocked) == event
    assert _compiled("AppearanceErased").decode(blocked) == event


# ----------------------------------------------------------------- corrupt bodies


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def _zone_entered(**changes: Any) -> ZoneEntered:
    return ZoneEntered.create(producer="p", occurred_at=T0, camera_id="c", zone_id="z",
                              track_id="t", **changes)


def test_corrupt_bodies_raise_codec_error(codec: Codec) -> None:
    good = codec.encode(_zone_entered(causation_id="abc"))
    header, body = good[:10], good[10:]
    cases = {
        "truncated": header + body[:-1],
        "trailing": good + b"\x00",
        # causation_id's union index byte is the one before its length + "abc"
        "bad union index": good.replace(b"\x02\x06abc", b"\x06\x06abc"),
        "invalid utf-8": good.replace(b"abc", b"a\xffc"),
        "string past the end": good.replace(b"\x06abc", b"\x7eabc"),
        "endless varint": header + b"\xff" * 12,
        "negative length": header + b"\x01",
    }
    for label, data in cases.items():
        with pytest.raises(CodecError, match=r"^corrupt ZoneEntered body: ") as info:
            codec.decode(data)
        assert info.value.__cause__ is not None, label
    with pytest.raises(CodecError, match=re.escape("1 trailing byte(s) after the record")):
        codec.decode(good + b"\x00")
    with pytest.raises(CodecError, match="causation_id: union index 3 out of range"):
        codec.decode(cases["bad union index"])


def test_bad_boolean_byte_and_absurd_array_count(codec: Codec) -> None:
    frame = codec.encode(_frame(detections=[]))
    # skipped (boolean, 0x00) is followed by the empty detections array (0x00) and the
    # detector model string "m"
    assert b"\x00\x00\x02m" in frame
    with pytest.raises(CodecError, match="skipped: boolean byte 2"):
        codec.decode(frame.replace(b"\x00\x00\x02m", b"\x02\x00\x02m", 1))
    with pytest.raises(CodecError, match="detections: 1000000 items in"):
        codec.decode(frame.replace(b"\x00\x00\x02m", b"\x00\x80\x89\x7a\x02m", 1))


def test_compiled_decoder_raises_its_own_error_type() -> None:
    with pytest.raises(AvroDecodeError, match="trailing"):
        _compiled("ZoneEntered").decode(_fastavro_body(_zone_entered()) + b"\x00")


# ----------------------------------------------------------------- wrong-typed values


def _rule(**changes: Any) -> RuleTriggered:
    event = RuleTriggered.create(
        producer="p", occurred_at=T0, camera_id="c", rule_id="r", rule_type="crowd",
        severity="info", value=5, threshold=4.5, track_ids=["t1"], first_evidence_at=T0,
        last_evidence_at=T0, evidence_event_ids=["e1", "e2"],
    )
    return event.evolve(**changes)


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (_rule(camera_id=None), "camera_id"),
        (_rule(camera_id=b"c"), "camera_id"),
        (_rule(value=None), "{value,threshold}"),
        (_rule(threshold="5"), "{value,threshold}"),
        (_rule(track_ids="t1"), "track_ids"),
        (_rule(track_ids=None), "track_ids"),
        (_rule(evidence_event_ids=["e1", 2]), "evidence_event_ids[]"),
        (_rule(first_evidence_at=1_700_000_000_000_000), "first_evidence_at"),
        (_rule(first_evidence_at=datetime(2026, 1, 1)), "first_evidence_at"),
        (_rule(auto_resolve=1), "auto_resolve"),
        (_rule(cooldown_s="soon"), "cooldown_s"),
        (_rule(zone_id=5), "zone_id"),
        (_frame(frame_sequence=1.5), "frame_sequence"),
        (_frame(frame_sequence=True), "frame_sequence"),
        (_frame(frame_sequence=2**63), "frame_sequence"),
        (_frame(skipped=None), "skipped"),
        (_frame(detections=[None]), "detections[].detection_id"),
        (_frame(detections=[Detection(detection_id="d", label="l", score="x", x1=0, y1=0,
                                      x2=0, y2=0)]), "detections[].{score,x1,y1,x2,y2}"),
        (_frame(embedder_model=1), "embedder_model"),
    ],
    ids=lambda x: x if isinstance(x, str) else "",
)
def test_wrong_typed_values_raise_codec_error_naming_type_and_field(
    event: Event, field: str, codec: Codec
) -> None:
    name = type(event).__name__
    with pytest.raises(CodecError, match=re.escape(f"cannot encode {name} (field {field}): ")):
        codec.encode(event)


def test_naive_datetimes_are_refused_not_read_as_local_time(codec: Codec) -> None:
    """fastavro writes a naive datetime as the machine's local time (time.mktime); an
    event's time must not depend on where it was encoded, so the codec refuses it."""
    with pytest.raises(CodecError, match="timezone-aware datetime, got naive"):
        codec.encode(_zone_entered().evolve(occurred_at=datetime(2026, 1, 1)))


def test_bytes_like_values_are_written_as_bytes() -> None:
    event = FrameCaptured.create(producer="p", occurred_at=T0, edge_id="e", camera_id="c",
                                 sequence=1, width=1, height=1, motion_score=0.0, jpeg=b"\xff\xd8")
    compiled = _compiled("FrameCaptured")
    for other in (bytearray(b"\xff\xd8"), memoryview(b"\xff\xd8")):
        assert compiled.encode(event.evolve(jpeg=other)) == compiled.encode(event)


# ----------------------------------------------------------------- compile-time checks


@dataclass(frozen=True, slots=True, kw_only=True)
class Probe:
    x: Any = None


def _probe_schema(field_type: Any, default: Any = None) -> dict[str, Any]:
    field: dict[str, Any] = {"name": "x", "type": field_type}
    if default is not None:
        field["default"] = default
    return fastavro.parse_schema({"type": "record", "name": "vigil.events.Probe",
                                  "fields": [field]})


@pytest.mark.parametrize(
    "field_type",
    [
        "int",
        "float",
        {"type": "map", "values": "string"},
        {"type": "enum", "name": "Colour", "symbols": ["RED"]},
        {"type": "fixed", "name": "Four", "size": 4},
        ["null", "string", "long"],
        ["string", "long"],
        {"type": "long", "logicalType": "timestamp-millis"},
        {"type": "int", "logicalType": "date"},
        {"type": "array", "items": "float"},
    ],
    ids=["int", "float", "map", "enum", "fixed", "3-union", "union-without-null",
         "timestamp-millis", "date", "array-of-float"],
)
def test_unsupported_types_fail_at_compile_time(field_type: Any) -> None:
    pattern = r"Probe\.x(\[\])?: Avro type .* not supported"
    with pytest.raises(UnsupportedSchemaError, match=pattern):
        compile_record(_probe_schema(field_type), Probe)


def test_a_record_that_does_not_mirror_its_dataclass_fails_at_compile_time() -> None:
    schema = fastavro.parse_schema({"type": "record", "name": "vigil.events.Probe",
                                    "fields": [{"name": "y", "type": "long"}]})
    with pytest.raises(UnsupportedSchemaError, match="fields of Probe differ"):
        compile_record(schema, Probe)
    with pytest.raises(UnsupportedSchemaError, match="mapped to class ZoneEntered"):
        compile_record(_probe_schema("long"), ZoneEntered)


@dataclass(frozen=True, slots=True, kw_only=True)
class NullLast:
    x: int | None = 5


def test_null_second_unions_are_supported() -> None:
    """[X, "null"] is how a union with a non-null default must be written (the default
    matches the first branch); no schema uses it today, but it is just as cheap."""
    schema = fastavro.parse_schema({"type": "record", "name": "vigil.events.NullLast",
                                    "fields": [{"name": "x", "type": ["long", "null"],
                                                "default": 5}]})
    compiled = compile_record(schema, NullLast)
    for value in (None, 0, -3, 2**40):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, schema, {"x": value})
        assert compiled.encode(NullLast(x=value)) == buf.getvalue()
        assert compiled.decode(buf.getvalue()) == NullLast(x=value)


@dataclass(frozen=True, slots=True, kw_only=True)
class Checked:
    x: int

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x must not be negative")


@dataclass(frozen=True, kw_only=True)
class NoSlots:
    x: int


def test_records_with_post_init_or_without_slots_are_built_through_init() -> None:
    """The decoder sets slots directly only where that is what __init__ would do."""
    for cls in (Checked, NoSlots):
        schema = fastavro.parse_schema({"type": "record", "name": f"vigil.events.{cls.__name__}",
                                        "fields": [{"name": "x", "type": "long"}]})
        compiled = compile_record(schema, cls)
        assert "_new(" not in compiled.decode_source
        assert compiled.decode(b"\x04") == cls(x=2)
    with pytest.raises(ValueError, match="must not be negative"):
        compile_record(fastavro.parse_schema(
            {"type": "record", "name": "vigil.events.Checked",
             "fields": [{"name": "x", "type": "long"}]}), Checked).decode(b"\x03")
