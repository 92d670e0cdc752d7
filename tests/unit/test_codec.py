"""schemas.codec: every event round-trips; the single-object encoding is readable by the
Apache Avro reference library from the .avsc file alone; bad input only ever raises
CodecError; the Confluent wire format works against a Schema Registry HTTP endpoint."""

from __future__ import annotations

import contextlib
import io
import json
import re
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import avro.io
import avro.schema
import fastavro
import pytest
from avro_reference import to_avro_dict
from event_strategies import any_event, event_strategy
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from reference_avro import rabin

from schemas.codec import (
    SCHEMA_DIR,
    SINGLE_OBJECT_MAGIC,
    Codec,
    CodecError,
    default_store,
    load_schema_file,
)
from schemas.events import EVENT_TYPES, NAMESPACE, Event, FrameCaptured, ZoneEntered
from vigil.errors import VigilError

EXAMPLES = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


def _zone_entered() -> ZoneEntered:
    return ZoneEntered.create(
        producer="test/0", occurred_at=datetime(2026, 1, 2, 3, 4, 5, 678_901, tzinfo=UTC),
        camera_id="cam-1", zone_id="door", track_id="t1",
    )


# ----------------------------------------------------------------- round trips


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_every_event_type_round_trips(name: str, codec: Codec) -> None:
    @EXAMPLES
    @given(event=event_strategy(EVENT_TYPES[name]))
    def check(event: Event) -> None:
        data = codec.encode(event)
        assert data[:2] == SINGLE_OBJECT_MAGIC
        decoded = codec.decode(data)
        assert type(decoded) is type(event)
        assert decoded == event
        assert codec.encode(decoded) == data, "encoding is deterministic"

    check()


def test_decode_many_keeps_order(codec: Codec) -> None:
    events = [_zone_entered(), _zone_entered().evolve(track_id="t2")]
    assert codec.decode_many(codec.encode(e) for e in events) == events


def test_non_utc_timestamps_decode_as_the_same_instant_in_utc(codec: Codec) -> None:
    from datetime import timedelta, timezone

    local = datetime(2026, 5, 1, 23, 30, tzinfo=timezone(timedelta(hours=2)))
    decoded = codec.decode(codec.encode(_zone_entered().evolve(occurred_at=local)))
    assert decoded.occurred_at == local
    assert decoded.occurred_at.utcoffset() == timedelta(0)


# ----------------------------------------------------------------- the Apache reference library


@pytest.mark.parametrize("name", sorted(EVENT_TYPES))
def test_header_fingerprint_is_the_spec_rabin_of_the_canonical_form(name: str,
                                                                    codec: Codec) -> None:
    path = SCHEMA_DIR / f"{name}.avsc"
    canonical = to_parsing_canonical_form(
        fastavro.parse_schema(load_schema_file(path), _write_hint=False)
    ).encode()
    # Apache avro-python 1.12's Schema.canonical_form keeps {"type":"long"} for logical
    # types instead of reducing it to "long" as the spec's [PRIMITIVES] rule says, so its
    # own fingerprint of these schemas deviates from the spec (and from Java/fastavro).
    # The expected value therefore hashes fastavro's (spec-conforming) canonical form with
    # avro's Rabin implementation, and cross-checks it against the spec's algorithm.
    expected = avro.schema._crc_64_fingerprint(canonical)
    assert expected == rabin(canonical).to_bytes(8, "little")
    assert b'"logicalType"' not in canonical
    event = EVENT_TYPES[name]
    data = codec.encode(_minimal(event))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == expected


def _minimal(cls: type[Event]) -> Event:
    return _MINIMAL[cls.__name__]


# One fixed example per type (drawn once, deterministically) for the header test above.
_MINIMAL: dict[str, Event] = {}


@pytest.fixture(scope="module", autouse=True)
def _fill_minimal() -> None:
    @settings(max_examples=1, database=None, derandomize=True)
    @given(st.data())
    def draw(data: st.DataObject) -> None:
        for name, cls in EVENT_TYPES.items():
            _MINIMAL[name] = data.draw(event_strategy(cls))

    draw()


def _apache_decode(name: str, body: bytes) -> Any:
    schema = avro.schema.parse((SCHEMA_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    decoder = avro.io.BinaryDecoder(io.BytesIO(body))
    return avro.io.DatumReader(schema, schema).read(decoder)


@EXAMPLES
@given(event=any_event)
def test_apache_avro_decodes_codec_output_from_the_avsc_alone(event: Event) -> None:
    data = Codec().encode(event)
    assert data[:2] == SINGLE_OBJECT_MAGIC
    name = type(event).__name__
    record = _apache_decode(name, data[10:])
    assert record == to_avro_dict(event)


# ----------------------------------------------------------------- errors


def _unknown_fingerprint() -> bytes:
    known = set(default_store().writers)
    fp = b"\x00" * 8
    assert fp not in known
    return fp


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty value"),
        (None, "empty value"),
        (b"garbage!", "unknown wire format"),
        (b"\xc3", "unknown wire format"),
        (b"\xc3\x01\x12\x34", "truncated single-object header"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown schema fingerprint 0000000000000000"),
        (b"\x00\x00\x00\x00\x07body", "no schema registry configured"),
        (b"\x00\x01", "unknown wire format"),
    ],
)
def test_bad_frames_raise_codec_error(data: bytes | None, message: str, codec: Codec) -> None:
    with pytest.raises(CodecError, match=re.escape(message)):
        codec.decode(data)


def test_corrupt_bodies_raise_codec_error(codec: Codec) -> None:
    good = codec.encode(_zone_entered())
    with pytest.raises(CodecError, match="corrupt ZoneEntered body"):
        codec.decode(good[:-3])  # truncated body
    with pytest.raises(CodecError, match="corrupt ZoneEntered body: 2 trailing byte"):
        codec.decode(good + b"\x00\x00")
    header = good[:10]
    with pytest.raises(CodecError, match="corrupt ZoneEntered body"):
        codec.decode(header + b"\xff" * 12)  # a negative string length
    frame_header = codec.encode(
        FrameCaptured.create(producer="p", edge_id="e", camera_id="c", sequence=1, width=1,
                             height=1, motion_score=0.0)
    )[:10]
    with pytest.raises(CodecError, match="corrupt FrameCaptured body"):
        codec.decode(frame_header + good[10:])  # body of another type


def test_codec_error_is_a_vigil_error_and_chains_the_cause(codec: Codec) -> None:
    with pytest.raises(CodecError) as info:
        codec.decode(codec.encode(_zone_entered())[:-3])
    assert isinstance(info.value, VigilError)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize(
    "change",
    [
        {"sequence": 2**70},  # does not fit an Avro long
        {"width": "wide"},
        {"jpeg": "not bytes"},
        {"camera_id": None},
    ],
    ids=["long-overflow", "str-for-long", "str-for-bytes", "none-for-string"],
)
def test_unencodable_values_raise_codec_error(change: dict[str, Any], codec: Codec) -> None:
    event = FrameCaptured.create(producer="p", edge_id="e", camera_id="c", sequence=1,
                                 width=1, height=1, motion_score=0.0)
    with pytest.raises(CodecError, match="cannot encode FrameCaptured"):
        codec.encode(event.evolve(**change))


_fingerprints = st.sampled_from(sorted(default_store().writers))


@settings(max_examples=300, deadline=None)
@given(
    data=st.one_of(
        st.binary(max_size=64),
        st.tuples(st.sampled_from([b"\xc3\x01", b"\x00", b"\xc3"]), st.binary(max_size=64)).map(
            b"".join
        ),
        st.tuples(st.just(SINGLE_OBJECT_MAGIC), _fingerprints, st.binary(max_size=200)).map(
            b"".join
        ),
    )
)
def test_junk_never_raises_anything_but_codec_error(data: bytes) -> None:
    codec = Codec()
    try:
        event = codec.decode(data)
    except CodecError as exc:
        assert str(exc)
    else:
        assert isinstance(event, Event)


@EXAMPLES
@given(event=any_event, data=st.data())
def test_flipped_or_cut_bytes_never_raise_anything_but_codec_error(
    event: Event, data: st.DataObject
) -> None:
    codec = Codec()
    raw = bytearray(codec.encode(event))
    cut = data.draw(st.integers(0, len(raw)))
    if data.draw(st.booleans()):
        raw = raw[:cut]
    elif cut < len(raw):
        raw[cut] ^= data.draw(st.integers(1, 255))
    with contextlib.suppress(CodecError):
        codec.decode(bytes(raw))


# ----------------------------------------------------------------- Confluent wire format


class _Registry(BaseHTTPRequestHandler):
    """The two Schema Registry REST calls the codec makes (through confluent-kafka's
    client), with the registry's semantics: one id per distinct schema,
    POST /subjects/{s}/versions and GET /schemas/ids/{id}."""

    schemas: list[str]
    requests: list[str]

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.schemaregistry.v1+json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_POST(self) -> None:
        path = urlsplit(self.path).path  # the client adds ?normalize=false
        self.requests.append(f"POST {path}")
        match = re.fullmatch(r"/subjects/([^/]+)/versions", path)
        length = int(self.headers.get("Content-Length", 0))
        body = json.loads(self.rfile.read(length) or b"{}")
        if not match or "schema" not in body:
            self._reply(404, {"error_code": 404, "message": "not found"})
            return
        try:
            avro.schema.parse(body["schema"])
        except Exception as exc:
            self._reply(422, {"error_code": 42201, "message": f"invalid schema: {exc}"})
            return
        canonical = json.dumps(json.loads(body["schema"]), sort_keys=True)
        if canonical not in self.schemas:
            self.schemas.append(canonical)
        self._reply(200, {"id": self.schemas.index(canonical) + 1})

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        self.requests.append(f"GET {path}")
        match = re.fullmatch(r"/schemas/ids/(\d+)", path)
        if match and 1 <= int(match.group(1)) <= len(self.schemas):
            self._reply(200, {"schema": self.schemas[int(match.group(1)) - 1]})
        else:
            self._reply(404, {"error_code": 40403, "message": "Schema not found"})


@pytest.fixture
def registry() -> Iterator[tuple[str, type[_Registry]]]:
    handler = type("Registry", (_Registry,), {"schemas": [], "requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_confluent_wire_format_round_trip(registry: tuple[str, type[_Registry]]) -> None:
    url, handler = registry
    producer_side = Codec(registry_url=url)
    event = _zone_entered()
    data = producer_side.encode(event)
    assert data[0] == 0 and int.from_bytes(data[1:5], "big") == 1
    assert handler.requests == [f"POST /subjects/{NAMESPACE}.ZoneEntered/versions"]
    # The body after the 5-byte header is plain Avro binary: the .avsc alone reads it.
    assert _apache_decode("ZoneEntered", data[5:]) == to_avro_dict(event)

    consumer_side = Codec(registry_url=url)  # cold cache: fetches the schema by id
    assert consumer_side.decode(data) == event
    assert consumer_side.decode(data) == event
    assert handler.requests[1:] == ["GET /schemas/ids/1"], "schema by id is cached"
    # Values written without a registry still decode on a registry-configured consumer.
    assert consumer_side.decode(Codec().encode(event)) == event


def test_confluent_one_id_per_event_type(registry: tuple[str, type[_Registry]]) -> None:
    url, _ = registry
    codec = Codec(registry_url=url)
    ids = {name: int.from_bytes(codec.encode(ev)[1:5], "big") for name, ev in _MINIMAL.items()}
    assert len(set(ids.values())) == len(EVENT_TYPES)
    for ev in _MINIMAL.values():
        assert Codec(registry_url=url).decode(codec.encode(ev)) == ev


def test_confluent_unknown_schema_id(registry: tuple[str, type[_Registry]]) -> None:
    url, _ = registry
    with pytest.raises(CodecError, match="unknown schema id 99"):
        Codec(registry_url=url).decode(b"\x00\x00\x00\x00\x63" + b"\x00")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_registry_unavailable_is_a_clear_codec_error() -> None:
    codec = Codec(registry_url=f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(CodecError, match=r"schema registry: cannot register vigil\.events\."):
        codec.encode(_zone_entered())
    with pytest.raises(CodecError, match="schema registry: unknown schema id 1"):
        codec.decode(b"\x00\x00\x00\x00\x01\x00")
