"""A plain Avro binary encoder and decoder, the Parsing Canonical Form and the CRC-64-AVRO
fingerprint, each written from the Avro 1.11 specification and driven by the committed
.avsc JSON (no fastavro, no compiled code): the reference the codec
(schemas/codec.py, schemas/avro_compiled.py) is held to in
tests/unit/test_reference_equivalence.py.

Only what the event schemas use: null, boolean, int, long, float, double, bytes, string,
records, arrays, unions and the timestamp-micros logical type. Arrays are written as one
block followed by the end marker, as every writer does for a list held in memory.
"""

from __future__ import annotations

import dataclasses
import json
import struct
from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.codec import SCHEMA_DIR

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


def load_avsc(name: str) -> dict[str, Any]:
    return json.loads((SCHEMA_DIR / f"{name}.avsc").read_text(encoding="utf-8"))


# --------------------------------------------------------------------------- names


def _full(name: str, namespace: str | None) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _resolve(t: Any, ns: str | None, named: dict[str, Any]) -> tuple[Any, str | None]:
    """A type with named references replaced by their definition (recorded on first
    sight), and the namespace it is read in."""
    if isinstance(t, str) and t not in PRIMITIVES:
        return named[_full(t, ns)], named[_full(t, ns)]["_ns"]
    if isinstance(t, dict) and t["type"] in ("record", "enum", "fixed"):
        full = _full(t["name"], t.get("namespace", ns))
        t = {**t, "_ns": full.rpartition(".")[0] or None}
        named[full] = t
        return t, t["_ns"]
    return t, ns


# --------------------------------------------------------------------------- encoding


def _long(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)  # zig-zag
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def as_datum(t: Any, value: Any, ns: str | None = None,
             named: dict[str, Any] | None = None) -> Any:
    """The Python record as the generic datum of type `t` (records as dicts)."""
    named = {} if named is None else named
    t, ns = _resolve(t, ns, named)
    if isinstance(t, list):
        return as_datum(t[_branch(t, value, ns, named)], value, ns, named)
    kind = t if isinstance(t, str) else t["type"]
    if kind == "record":
        return {f["name"]: as_datum(f["type"], getattr(value, f["name"]), ns, named)
                for f in t["fields"]}
    if kind == "array":
        return [as_datum(t["items"], v, ns, named) for v in value]
    return value


def _branch(union: list[Any], value: Any, ns: str | None, named: dict[str, Any]) -> int:
    for i, b in enumerate(union):
        b, _ = _resolve(b, ns, dict(named))
        kind = b if isinstance(b, str) else b["type"]
        record_ok = kind != "record" or dataclasses.is_dataclass(value) or isinstance(value, dict)
        if (value is None) == (kind == "null") and record_ok:
            return i
    raise ValueError(f"no branch of {union} for {value!r}")


def encode(t: Any, value: Any) -> bytes:
    """The Avro binary encoding of the Python record `value` as type `t`."""
    out = bytearray()
    _enc(t, as_datum(t, value), None, {}, out)
    return bytes(out)


def _enc(t: Any, v: Any, ns: str | None, named: dict[str, Any], out: bytearray) -> None:
    t, ns = _resolve(t, ns, named)
    if isinstance(t, list):
        i = _branch(t, v, ns, named)
        out += _long(i)
        _enc(t[i], v, ns, named, out)
        return
    kind = t if isinstance(t, str) else t["type"]
    logical = None if isinstance(t, str) else t.get("logicalType")
    if kind == "null":
        return
    if kind == "boolean":
        out.append(1 if v else 0)
    elif kind in ("int", "long"):
        if logical == "timestamp-micros":
            v = (v - EPOCH) // timedelta(microseconds=1)
        out += _long(v)
    elif kind == "float":
        out += struct.pack("<f", v)
    elif kind == "double":
        out += struct.pack("<d", v)
    elif kind in ("bytes", "string"):
        raw = v.encode("utf-8") if kind == "string" else bytes(v)
        out += _long(len(raw)) + raw
    elif kind == "record":
        for f in t["fields"]:
            _enc(f["type"], v[f["name"]], ns, named, out)
    elif kind == "array":
        if v:
            out += _long(len(v))
            for item in v:
                _enc(t["items"], item, ns, named, out)
        out += _long(0)
    else:
        raise AssertionError(f"the reference does not write {kind}")


# --------------------------------------------------------------------------- decoding


def decode(t: Any, body: bytes) -> Any:
    """The generic datum of type `t` in `body`, which must hold exactly one."""
    pos = [0]
    value = _dec(t, body, pos, None, {})
    assert pos[0] == len(body), f"{len(body) - pos[0]} trailing byte(s)"
    return value


def _read_long(body: bytes, pos: list[int]) -> int:
    z = shift = 0
    while True:
        b = body[pos[0]]
        pos[0] += 1
        z |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return (z >> 1) ^ -(z & 1)


def _dec(t: Any, body: bytes, pos: list[int], ns: str | None, named: dict[str, Any]) -> Any:
    t, ns = _resolve(t, ns, named)
    if isinstance(t, list):
        return _dec(t[_read_long(body, pos)], body, pos, ns, named)
    kind = t if isinstance(t, str) else t["type"]
    logical = None if isinstance(t, str) else t.get("logicalType")
    if kind == "null":
        return None
    if kind == "boolean":
        pos[0] += 1
        return body[pos[0] - 1] == 1
    if kind in ("int", "long"):
        n = _read_long(body, pos)
        return EPOCH + timedelta(microseconds=n) if logical == "timestamp-micros" else n
    if kind in ("float", "double"):
        fmt = "<f" if kind == "float" else "<d"
        (x,) = struct.unpack_from(fmt, body, pos[0])
        pos[0] += struct.calcsize(fmt)
        return x
    if kind in ("bytes", "string"):
        n = _read_long(body, pos)
        raw = body[pos[0]:pos[0] + n]
        pos[0] += n
        return raw.decode("utf-8") if kind == "string" else raw
    if kind == "record":
        return {f["name"]: _dec(f["type"], body, pos, ns, named) for f in t["fields"]}
    if kind == "array":
        items = []
        while (n := _read_long(body, pos)) != 0:
            if n < 0:  # a block with its size in bytes
                n = -n
                _read_long(body, pos)
            items += [_dec(t["items"], body, pos, ns, named) for _ in range(n)]
        return items
    raise AssertionError(f"the reference does not read {kind}")


# --------------------------------------------------------------------------- fingerprint


def canonical_form(t: Any, ns: str | None = None, seen: set[str] | None = None) -> str:
    """Parsing Canonical Form: primitives as names, full names, only the attributes that
    matter for parsing, in the specification's order, no whitespace."""
    seen = set() if seen is None else seen
    if isinstance(t, str):
        return json.dumps(t if t in PRIMITIVES else _full(t, ns))
    if isinstance(t, list):
        return "[" + ",".join(canonical_form(b, ns, seen) for b in t) + "]"
    kind = t["type"]
    if kind in PRIMITIVES:
        return json.dumps(kind)  # {"type": "long", "logicalType": ...} -> "long"
    if kind in ("record", "enum", "fixed"):
        full = _full(t["name"], t.get("namespace", ns))
        if full in seen:
            return json.dumps(full)
        seen.add(full)
        inner_ns = full.rpartition(".")[0] or None
        parts = [f'"name":{json.dumps(full)}', f'"type":{json.dumps(kind)}']
        if kind == "record":
            fields = ",".join(
                f'{{"name":{json.dumps(f["name"])},'
                f'"type":{canonical_form(f["type"], inner_ns, seen)}}}'
                for f in t["fields"])
            parts.append(f'"fields":[{fields}]')
        elif kind == "enum":
            parts.append(f'"symbols":{json.dumps(t["symbols"], separators=(",", ":"))}')
        else:
            parts.append(f'"size":{t["size"]}')
        return "{" + ",".join(parts) + "}"
    if kind == "array":
        return f'{{"type":"array","items":{canonical_form(t["items"], ns, seen)}}}'
    if kind == "map":
        return f'{{"type":"map","values":{canonical_form(t["values"], ns, seen)}}}'
    raise AssertionError(f"unexpected type {t!r}")


def rabin(data: bytes) -> int:
    """CRC-64-AVRO exactly as the Avro specification writes it (Java), as an unsigned int."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for b in data:
        fp = (fp >> 8) ^ table[(fp ^ b) & 0xFF]
    return fp


def fingerprint(schema: dict[str, Any]) -> bytes:
    """The 8 bytes of a single-object header: the little-endian Rabin of the PCF."""
    return rabin(canonical_form(schema).encode()).to_bytes(8, "little")
