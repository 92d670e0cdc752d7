"""Avro codec for every Vigil event: the only place where events become bytes and back.

Two wire formats (docs/architecture.md, "Wire format"):

* Avro single-object encoding (default): ``C3 01`` + 8-byte little-endian CRC-64-AVRO
  fingerprint of the writer schema's parsing canonical form + the Avro binary body. A
  consumer needs nothing but the published ``.avsc`` files to decode it.
* Confluent wire format when a Schema Registry URL is given: ``00`` + 4-byte big-endian
  schema id + body. Subjects follow the RecordNameStrategy (subject = record full name),
  because several event types share a topic.

The writer schema is found from the fingerprint (or registry id) and resolved against the
current reader schema, so events written with an older committed schema version still
decode into today's records.

Bodies are written by the per-schema compiled encoder (`schemas.avro_compiled`), and read
by its compiled decoder when the writer schema is today's reader schema (the usual case);
fastavro stays for schema resolution (historical and registry writer schemas), where a
generic reader earns its cost, and as the reference the compiled code is tested against.
"""

from __future__ import annotations

import dataclasses
import io
import json
import struct
import typing
from collections.abc import Callable, Iterable
from functools import cache
from pathlib import Path
from typing import Any

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from schemas.avro_compiled import (
    AvroDecodeError,
    CompiledRecord,
    UnsupportedSchemaError,
    compile_record,
    optional_inner,
)
from schemas.events import EVENT_TYPES, NAMESPACE, Event
from vigil.errors import VigilError
from vigil.redact import redact

SCHEMA_DIR = Path(__file__).with_name("avro")
HISTORY_DIR = Path(__file__).with_name("history")

SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_CONFLUENT_HEADER = struct.Struct(">bI")


class CodecError(VigilError):
    """A value could not be encoded or decoded; the message says why."""


def load_schema_file(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        return json.load(fh)


def schema_fingerprint(parsed: dict[str, Any]) -> bytes:
    """CRC-64-AVRO of the parsing canonical form, little-endian, as the spec writes it."""
    return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))


# ----------------------------------------------------------------- records <-> Avro dicts


_Build = Callable[[dict[str, Any]], Any]
_BUILDERS: dict[type, _Build] = {}


def _optional_record(sub: _Build) -> Callable[[Any], Any]:
    return lambda v: None if v is None else sub(v)


def _record_list(sub: _Build) -> Callable[[Any], Any]:
    return lambda v: [sub(x) for x in v]


def _builder(cls: type) -> _Build:
    """A function turning a decoded Avro dict into `cls`, converting nested records
    (built once per class)."""
    build = _BUILDERS.get(cls)
    if build is None:
        build = _BUILDERS[cls] = _make_builder(cls)
    return build


def _make_builder(cls: type) -> _Build:
    hints = typing.get_type_hints(cls)
    converters: dict[str, Callable[[Any], Any]] = {}
    for f in dataclasses.fields(cls):
        inner = optional_inner(hints[f.name])
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            converters[f.name] = _optional_record(_builder(inner))
        elif typing.get_origin(inner) is list:
            (item,) = typing.get_args(inner)
            if isinstance(item, type) and dataclasses.is_dataclass(item):
                converters[f.name] = _record_list(_builder(item))
    names = [f.name for f in dataclasses.fields(cls)]
    plain = [n for n in names if n not in converters]
    nested = list(converters.items())

    def build(data: dict[str, Any]) -> Any:
        # one pass over the record's own fields (a decoded dict may hold more after
        # schema resolution, never less than the reader schema's)
        kwargs = {name: data[name] for name in plain if name in data}
        for name, conv in nested:
            if name in data:
                kwargs[name] = conv(data[name])
        return cls(**kwargs)

    return build


def from_avro_dict(event_type: str, data: dict[str, Any]) -> Event:
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise CodecError(f"unknown event type {event_type!r}")
    return _builder(cls)(data)


# ----------------------------------------------------------------- schema store


@dataclasses.dataclass(frozen=True)
class _Writer:
    name: str  # short record name == event type
    parsed: dict[str, Any]


def _parse(raw: dict[str, Any]) -> tuple[dict[str, Any], bytes]:
    """(schema parsed for fastavro, fingerprint). The fingerprint comes from a parse
    without fastavro's "already parsed" marker, which is not part of the canonical form;
    the schema handed to fastavro carries the marker, because without it
    ``schemaless_writer``/``schemaless_reader`` parse the whole schema again on every call
    (a third of the time of encoding or decoding a FrameAnalyzed)."""
    fp = schema_fingerprint(_parse_record(raw, write_hint=False))
    return _parse_record(raw), fp


def _parse_record(raw: Any, write_hint: bool = True) -> dict[str, Any]:
    """fastavro's parse of a record schema (every event schema is one)."""
    parsed = fastavro.parse_schema(raw, _write_hint=write_hint)
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        raise CodecError(f"not a record schema: {str(raw)[:200]}")
    return parsed


class SchemaStore:
    """Current reader schemas plus every committed historical writer schema, and the
    compiled encoder/decoder of each reader schema (compiled here, once per store, so an
    unsupported schema fails at startup rather than on the first event of its type)."""

    def __init__(self, schema_dir: Path = SCHEMA_DIR, history_dir: Path = HISTORY_DIR):
        self.readers: dict[str, dict[str, Any]] = {}
        self.reader_fingerprints: dict[str, bytes] = {}
        self.writers: dict[bytes, _Writer] = {}
        self.compiled: dict[str, CompiledRecord] = {}
        for path in sorted(schema_dir.glob("*.avsc")):
            parsed, fp = _parse(load_schema_file(path))
            name = path.stem
            self.readers[name] = parsed
            self.reader_fingerprints[name] = fp
            self.writers[fp] = _Writer(name, parsed)
        if history_dir.is_dir():
            for path in sorted(history_dir.glob("*.avsc")):
                parsed, fp = _parse(load_schema_file(path))
                name = str(parsed["name"]).rsplit(".", 1)[-1]
                self.writers.setdefault(fp, _Writer(name, parsed))
        missing = set(EVENT_TYPES) - set(self.readers)
        if missing:
            raise CodecError(f"no .avsc for event types: {sorted(missing)}")
        for name, cls in EVENT_TYPES.items():
            try:
                self.compiled[name] = compile_record(self.readers[name], cls)
            except UnsupportedSchemaError as exc:
                raise CodecError(f"cannot compile the {name} schema: {exc}") from exc


@cache
def default_store() -> SchemaStore:
    return SchemaStore()


# ----------------------------------------------------------------- registry client


class SchemaRegistry:
    """The Confluent Schema Registry through confluent-kafka's client
    (`confluent_kafka.schema_registry`, which also brings the registry's basic auth from
    ``http://user:password@host`` and TLS): register by subject, fetch by id.

    The codec keeps its own two small maps in front of it: subject -> id, looked up on
    every encode (the client's cache keys on the whole schema text), and id -> the schema
    parsed for fastavro. One attempt per call, as the codec's callers retry themselves;
    any failure becomes a CodecError naming the subject or id."""

    def __init__(self, url: str, timeout: float = 5.0):
        from confluent_kafka.schema_registry import SchemaRegistryClient

        self._client = SchemaRegistryClient({"url": url.rstrip("/"), "timeout": timeout,
                                             "max.retries": 0})
        self._ids: dict[str, int] = {}
        self._by_id: dict[int, dict[str, Any]] = {}

    def id_for(self, subject: str, schema: dict[str, Any]) -> int:
        if subject not in self._ids:
            from confluent_kafka.schema_registry import Schema

            try:
                self._ids[subject] = self._client.register_schema(
                    subject, Schema(json.dumps(schema), "AVRO"))
            except Exception as exc:  # the client raises its own and its transport's errors
                raise CodecError(
                    f"schema registry: cannot register {subject}: {redact(str(exc))}") from exc
        return self._ids[subject]

    def schema_for(self, schema_id: int) -> dict[str, Any]:
        if schema_id not in self._by_id:
            try:
                found = self._client.get_schema(schema_id)
            except Exception as exc:  # as in id_for
                raise CodecError(f"schema registry: unknown schema id {schema_id}: "
                                 f"{redact(str(exc))}") from exc
            raw = json.loads(found.schema_str or "null")
            self._by_id[schema_id] = _parse_record(raw, write_hint=False)
        return self._by_id[schema_id]


# ----------------------------------------------------------------- the codec


class Codec:
    """Encodes `Event` records to bytes and back, in either wire format."""

    def __init__(self, store: SchemaStore | None = None, registry_url: str | None = None):
        self.store = store or default_store()
        self.registry = SchemaRegistry(registry_url) if registry_url else None
        self._raw_readers = {
            name: load_schema_file(SCHEMA_DIR / f"{name}.avsc") for name in self.store.readers
        }
        self._single_object_headers = {
            name: SINGLE_OBJECT_MAGIC + fp for name, fp in self.store.reader_fingerprints.items()
        }

    def encode(self, event: Event) -> bytes:
        name = type(event).__name__
        compiled = self.store.compiled.get(name)
        if compiled is None:
            raise CodecError(f"no schema for event type {name!r}")
        if self.registry is not None:
            schema_id = self.registry.id_for(f"{NAMESPACE}.{name}", self._raw_readers[name])
            header = _CONFLUENT_HEADER.pack(0, schema_id)
        else:
            header = self._single_object_headers[name]
        try:
            return compiled.encode(event, header)
        except (ValueError, TypeError, AttributeError, OverflowError, struct.error) as exc:
            field = compiled.field_of(exc)
            where = f" (field {field})" if field else ""
            raise CodecError(f"cannot encode {name}{where}: {exc}") from exc

    def decode(self, data: bytes | None) -> Event:
        if not data:
            raise CodecError("empty value (a tombstone is not an event)")
        if data[:2] == SINGLE_OBJECT_MAGIC:
            if len(data) < 10:
                raise CodecError("truncated single-object header")
            writer = self.store.writers.get(bytes(data[2:10]))
            if writer is None:
                raise CodecError(f"unknown schema fingerprint {bytes(data[2:10]).hex()}")
            name, writer_schema, start = writer.name, writer.parsed, 10
        elif data[:1] == CONFLUENT_MAGIC and len(data) >= 5:
            if self.registry is None:
                raise CodecError("Confluent-framed value but no schema registry configured")
            _, schema_id = _CONFLUENT_HEADER.unpack(data[:5])
            writer_schema = self.registry.schema_for(schema_id)
            name = str(writer_schema["name"]).rsplit(".", 1)[-1]
            start = 5
        else:
            raise CodecError(f"unknown wire format (first bytes {bytes(data[:2]).hex()})")
        reader = self.store.readers.get(name)
        if reader is None:
            raise CodecError(f"no reader schema for event type {name!r}")
        if writer_schema is reader:
            # written with today's schema (the usual case): nothing to resolve, so the
            # compiled decoder reads the body straight into the record
            try:
                return self.store.compiled[name].decode(data, start)
            except AvroDecodeError as exc:
                raise CodecError(f"corrupt {name} body: {exc}") from exc
            except Exception as exc:  # truncation (IndexError, struct.error), bad UTF-8, ...
                raise CodecError(f"corrupt {name} body: {type(exc).__name__}: {exc}") from exc
        body = data[start:]
        stream = io.BytesIO(body)
        try:
            record = fastavro.schemaless_reader(stream, writer_schema, reader)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise CodecError(f"corrupt {name} body: {type(exc).__name__}: {exc}") from exc
        if stream.tell() != len(body):
            extra = len(body) - stream.tell()
            raise CodecError(f"corrupt {name} body: {extra} trailing byte(s) after the record")
        if not isinstance(record, dict):  # a record schema reads a dict
            raise CodecError(f"corrupt {name} body: read {type(record).__name__}, not a record")
        try:
            return from_avro_dict(name, record)
        except TypeError as exc:
            raise CodecError(f"{name} does not fit its record: {exc}") from exc

    def decode_many(self, values: Iterable[bytes]) -> list[Event]:
        return [self.decode(v) for v in values]


@cache
def default_codec() -> Codec:
    """The process-wide codec, configured from settings (registry URL if any)."""
    from vigil.settings import get_settings

    return Codec(registry_url=get_settings().schema_registry_url)
