"""Compiled Avro binary encoder/decoder for Vigil's own record schemas.

Why: the scene worker is CPU-bound, and fastavro's generic writer/reader (schema walk,
union branch selection by validation, an intermediate dict per record) cost 20-60 µs per
event. For each reader schema in ``schemas/avro`` this module generates Python source once
(straight-line code per field, consecutive doubles packed/unpacked with one ``struct``
call, nested records inlined) and ``exec``s it, giving

* ``encode(obj, prefix=b"") -> bytes``: ``prefix`` + the Avro binary body, read straight
  from the dataclass attributes (no intermediate dict);
* ``decode(body, pos=0) -> obj``: the dataclass (nested ones too) from the body starting
  at ``pos``; the body must end exactly with the record.

Only what our schemas use is supported: string, long, double, boolean, bytes,
long/timestamp-micros, arrays, nested named records (also by-name references) and
two-branch unions with "null". Anything else raises `UnsupportedSchemaError` at compile
time, so a schema change cannot silently be mis-encoded. Schema resolution (a writer
schema other than today's reader) is not handled here: the codec keeps fastavro for it.

Types are checked more strictly than fastavro's plain (non-union) writers, which truncate
a float written as a long and write None as ``false``: a long takes an ``int`` (not bool,
not float), a double any real number, a boolean only ``bool``, a string only ``str``,
bytes a bytes-like object, an array a list or tuple, a timestamp only a timezone-aware
datetime (fastavro would read a naive one as the machine's local time). Encodings are
byte-identical to fastavro's for every valid value (tests/unit/test_avro_compiled.py).
"""

from __future__ import annotations

import dataclasses
import operator
import struct
import types
import typing
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

from vigil.errors import VigilError


class UnsupportedSchemaError(VigilError):
    """The schema uses an Avro feature the compiled codec does not implement."""


class AvroDecodeError(ValueError):
    """The body is not a valid encoding of the record (message says where and why)."""


_LONG_MIN, _LONG_MAX = -(2**63), 2**63 - 1
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICRO = timedelta(microseconds=1)
_SMALL = 8192  # longs in [-_SMALL, _SMALL) are looked up, not computed (<= 2 bytes)


def _varint_slow(z: int) -> bytes:
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


#: Unsigned varints of 0 <= z < 2**14, and 14-bit chunks followed by more chunks (both
#: bytes with the continuation bit): a timestamp's 8-byte varint is 4 lookups, not 8 steps.
_U14: list[bytes] = [_varint_slow(z) for z in range(1 << 14)]
_C14: list[bytes] = [bytes(((z & 0x7F) | 0x80, (z >> 7) | 0x80)) for z in range(1 << 14)]


def _varint(z: int) -> bytes:
    """Unsigned varint of an already zig-zagged value."""
    if z < 16384:
        return _U14[z]
    parts = []
    while z >= 16384:
        parts.append(_C14[z & 16383])
        z >>= 14
    parts.append(_U14[z])
    return b"".join(parts)


_LONGS: list[bytes] = [_U14[(n << 1) ^ (n >> 63)] for n in range(-_SMALL, _SMALL)]
_LENS: list[bytes] = _LONGS[_SMALL:]  # non-negative lengths/counts: _LENS[n]


def _long(n: Any) -> bytes:
    """Zig-zag varint of an Avro long (the general path; small ints use the table)."""
    if type(n) is not int:
        if isinstance(n, bool) or not hasattr(n, "__index__"):
            raise TypeError(f"long needs an int, got {type(n).__name__} {n!r}")
        n = operator.index(n)
    if -_SMALL <= n < _SMALL:
        return _LONGS[n + _SMALL]
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{n} does not fit an Avro long")
    return _varint((n << 1) ^ (n >> 63))


def _timestamp(v: Any) -> bytes:
    """timestamp-micros of an aware datetime: the same exact integer as fastavro's
    ``(delta.days * 86400 + delta.seconds) * 10**6 + delta.microseconds``. Subtracting the
    aware epoch is also the type check: it fails for naive datetimes and non-datetimes."""
    try:
        n = (v - _EPOCH) // _MICRO
    except TypeError:
        if isinstance(v, datetime):
            raise TypeError("timestamp-micros needs a timezone-aware datetime, "
                            f"got naive {v!r}") from None
        raise TypeError(f"timestamp-micros needs a datetime, got {type(v).__name__} "
                        f"{v!r}") from None
    if type(n) is not int:  # a timedelta-like subtraction result of an odd operand
        raise TypeError(f"timestamp-micros needs a datetime, got {type(v).__name__}")
    if -_SMALL <= n < _SMALL:
        return _LONGS[n + _SMALL]
    if not _LONG_MIN <= n <= _LONG_MAX:
        raise OverflowError(f"{v!r} does not fit timestamp-micros")
    return _varint((n << 1) ^ (n >> 63))


_ASCII_LEN = [chr(2 * n) for n in range(64)]  # zig-zag length prefix of 0..63, as text


def _short_ascii_strings(v: list[Any] | tuple[Any, ...]) -> bytes | None:
    """The items of a string array when all are ASCII and shorter than 64 characters (ids,
    labels): prefixes and text joined as str and encoded once, a third cheaper than
    encoding item by item. None: anything else (also wrong types), for the general loop."""
    try:
        text = "".join([_ASCII_LEN[len(x)] + x for x in v])
    except (IndexError, TypeError):
        return None
    return text.encode() if text.isascii() else None


def _bytes(v: Any) -> bytes:
    if isinstance(v, (bytearray, memoryview)):
        return bytes(v)
    raise TypeError(f"bytes needs a bytes-like object, got {type(v).__name__}")


def _bad_bool(v: Any) -> bytes:
    raise TypeError(f"boolean needs a bool, got {type(v).__name__} {v!r}")


def _bad_array(v: Any) -> list[Any]:
    raise TypeError(f"array needs a list or tuple, got {type(v).__name__}")


def _read_long(d: bytes, p: int) -> tuple[int, int]:
    """(value, next position) of the varint at ``p`` (the multi-byte path)."""
    z = shift = 0
    while True:
        b = d[p]
        p += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), p
        shift += 7
        if shift > 63:
            raise AvroDecodeError(f"varint longer than 10 bytes at offset {p}")


_ZIGZAG1 = tuple((b >> 1) ^ -(b & 1) for b in range(128))
_DOUBLE = {n: struct.Struct("<" + "d" * n) for n in range(1, 33)}

_BASE_NAMES: dict[str, Any] = {
    "_long": _long, "_LONGS": _LONGS, "_LENS": _LENS, "_SMALL": _SMALL, "_ts": _timestamp,
    "_bytes": _bytes, "_bad_bool": _bad_bool, "_bad_array": _bad_array, "_s": str.encode,
    "_rl": _read_long, "_Z1": _ZIGZAG1, "_EPOCH": _EPOCH, "_td": timedelta,
    "_Err": AvroDecodeError, "_new": object.__new__, "_bytes_t": bytes,
    "_list": list, "_tuple": tuple,
    "_sa": _short_ascii_strings,
}


# ----------------------------------------------------------------- schema walk


def optional_inner(hint: Any) -> Any:
    """``X`` for a type hint ``X | None`` (or ``Optional[X]``), the hint itself otherwise."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


class _Gen:
    """Source generator for one top-level record (encoder and decoder)."""

    def __init__(self, top: dict[str, Any], cls: type):
        self.top_name = str(top["name"])
        self.named: dict[str, dict[str, Any]] = {}
        self.names: dict[str, Any] = dict(_BASE_NAMES)
        self.lines: list[str] = []
        self.paths: list[str] = []  # field path per generated line (error messages)
        self.counter = 0
        self.stack: list[str] = []  # records being inlined (recursion check)
        self.cls = cls

    def var(self, stem: str) -> str:
        self.counter += 1
        return f"{stem}{self.counter}"

    def const(self, value: Any, stem: str) -> str:
        name = f"_{stem}{self.counter}_{len(self.names)}"
        self.names[name] = value
        return name

    def emit(self, indent: int, line: str, path: str) -> None:
        self.lines.append("    " * indent + line)
        self.paths.append(path)

    def unsupported(self, path: str, what: Any) -> UnsupportedSchemaError:
        return UnsupportedSchemaError(
            f"{self.top_name}.{path}: Avro type {what!r} is not supported by the compiled "
            "codec (string, long, double, boolean, bytes, timestamp-micros, arrays, records "
            "and [\"null\", X] unions only): extend schemas/avro_compiled.py")

    # ---- type normalisation

    def resolve(self, t: Any, path: str) -> Any:
        if isinstance(t, str):
            if t in ("string", "long", "double", "boolean", "bytes", "null"):
                return t
            if t in self.named:
                return self.named[t]
            raise self.unsupported(path, t)
        if isinstance(t, list):
            return t
        if not isinstance(t, dict):
            raise self.unsupported(path, t)
        kind = t.get("type")
        logical = t.get("logicalType")
        if logical is not None:
            if kind == "long" and logical == "timestamp-micros":
                return "timestamp"
            raise self.unsupported(path, t)
        if kind == "record":
            self.named[str(t["name"])] = t
            return t
        if kind == "array":
            return t
        if isinstance(kind, str) and kind in ("string", "long", "double", "boolean", "bytes"):
            return kind
        raise self.unsupported(path, t)

    def union_branch(self, t: list[Any], path: str) -> tuple[int, Any]:
        """(index of null, the other branch) of a two-branch union with null."""
        if len(t) != 2 or "null" not in t or t[0] == t[1]:
            raise self.unsupported(path, t)
        null_at = t.index("null")
        return null_at, t[1 - null_at]

    def record_fields(self, rec: dict[str, Any], cls: Any, path: str) -> list[tuple]:
        """[(name, type, hint)] after checking the dataclass mirrors the record."""
        name = str(rec["name"])
        if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
            raise UnsupportedSchemaError(
                f"{self.top_name}.{path}: record {name} has no dataclass (hint {cls!r})")
        if name.rsplit(".", 1)[-1] != cls.__name__:
            raise UnsupportedSchemaError(
                f"{self.top_name}.{path}: record {name} mapped to class {cls.__name__}")
        if name in self.stack:
            raise self.unsupported(path, f"recursive record {name}")
        fields = dataclasses.fields(cls)
        if [f.name for f in fields] != [f["name"] for f in rec["fields"]]:
            raise UnsupportedSchemaError(
                f"{self.top_name}.{path}: fields of {cls.__name__} differ from record {name}")
        hints = typing.get_type_hints(cls)
        return [(f["name"], f["type"], hints[f["name"]]) for f in rec["fields"]]

    @staticmethod
    def _is_double(t: Any) -> bool:
        return t == "double" or (isinstance(t, dict) and t.get("type") == "double"
                                 and "logicalType" not in t)

    @staticmethod
    def _runs(fields: list[tuple], is_double: Callable[[Any], bool]) -> list[list[tuple]]:
        """Fields grouped so that consecutive doubles form one group."""
        groups: list[list[tuple]] = []
        for f in fields:
            if is_double(f[1]) and groups and is_double(groups[-1][0][1]):
                groups[-1].append(f)
            else:
                groups.append([f])
        return groups

    # ---- encoder

    def enc_value(self, t: Any, hint: Any, v: str, ind: int, path: str) -> None:
        t = self.resolve(t, path)
        e = self.emit
        if t == "string":
            b = self.var("b")
            e(ind, f"{b} = _s({v})", path)
            e(ind, f"a(_LENS[len({b})] if len({b}) < _SMALL else _long(len({b})))", path)
            e(ind, f"a({b})", path)
        elif t == "bytes":
            b = self.var("b")
            e(ind, f"{b} = {v} if type({v}) is _bytes_t else _bytes({v})", path)
            e(ind, f"a(_LENS[len({b})] if len({b}) < _SMALL else _long(len({b})))", path)
            e(ind, f"a({b})", path)
        elif t == "long":
            e(ind, f"a(_LONGS[{v} + _SMALL] if type({v}) is int and -_SMALL <= {v} < _SMALL "
                   f"else _long({v}))", path)
        elif t == "double":
            e(ind, f"a(_d1({v}))", path)
            self.names["_d1"] = _DOUBLE[1].pack
        elif t == "boolean":
            e(ind, f"a(b'\\x01' if {v} is True else b'\\x00' if {v} is False "
                   f"else _bad_bool({v}))", path)
        elif t == "timestamp":
            e(ind, f"a(_ts({v}))", path)
        elif t == "null":
            raise self.unsupported(path, "null outside a union")
        elif isinstance(t, list):
            null_at, other = self.union_branch(t, path)
            null_b, val_b = (b"\x00", b"\x02") if null_at == 0 else (b"\x02", b"\x00")
            e(ind, f"if {v} is None:", path)
            e(ind + 1, f"a({null_b!r})", path)
            e(ind, "else:", path)
            e(ind + 1, f"a({val_b!r})", path)
            self.enc_value(other, optional_inner(hint), v, ind + 1, path)
        elif t["type"] == "array":
            (item_hint,) = typing.get_args(hint) or (Any,)
            x = self.var("x")
            e(ind, f"if type({v}) is not _list and type({v}) is not _tuple:", path)
            e(ind + 1, f"_bad_array({v})", path)
            e(ind, f"if {v}:", path)
            e(ind + 1, f"a(_LENS[len({v})] if len({v}) < _SMALL else _long(len({v})))", path)
            loop = ind + 1
            if self.resolve(t["items"], path) == "string":
                s = self.var("s")
                e(ind + 1, f"{s} = _sa({v})", path)
                e(ind + 1, f"if {s} is not None:", path)
                e(ind + 2, f"a({s})", path)
                e(ind + 1, "else:", path)
                loop = ind + 2
            e(loop, f"for {x} in {v}:", path)
            self.enc_value(t["items"], item_hint, x, loop + 1, path + "[]")
            e(ind, "a(b'\\x00')", path)
        else:  # record
            self.enc_record(t, hint, v, ind, path)

    def enc_record(self, rec: dict[str, Any], cls: Any, v: str, ind: int, path: str) -> None:
        fields = self.record_fields(rec, cls, path)
        self.stack.append(str(rec["name"]))
        for group in self._runs(fields, self._is_double):
            if len(group) > 1:
                pack = self.const(_DOUBLE[len(group)].pack, "pack")
                args = ", ".join(f"{v}.{name}" for name, _, _ in group)
                sub = ",".join(name for name, _, _ in group)
                self.emit(ind, f"a({pack}({args}))", f"{path}.{{{sub}}}".lstrip("."))
                continue
            name, ftype, hint = group[0]
            fv = self.var("v")
            fpath = f"{path}.{name}".lstrip(".")
            self.emit(ind, f"{fv} = {v}.{name}", fpath)
            self.enc_value(ftype, hint, fv, ind, fpath)
        self.stack.pop()

    # ---- decoder

    def dec_long(self, out: str, ind: int, path: str) -> None:
        e = self.emit
        e(ind, "b = d[p]", path)
        e(ind, "if b < 128:", path)
        e(ind + 1, f"{out} = _Z1[b]", path)
        e(ind + 1, "p += 1", path)
        e(ind, "else:", path)
        e(ind + 1, f"{out}, p = _rl(d, p)", path)

    def dec_value(self, t: Any, hint: Any, out: str, ind: int, path: str) -> None:
        t = self.resolve(t, path)
        e = self.emit
        if t in ("string", "bytes"):
            n = self.var("n")
            self.dec_long(n, ind, path)
            e(ind, f"q = p + {n}", path)
            e(ind, f"if {n} < 0 or q > e:", path)
            e(ind + 1, f"raise _Err(f'{path}: length {{{n}}} at offset {{p}} past the end "
                       f"of a {{e}}-byte body')", path)
            e(ind, f"{out} = d[p:q].decode()" if t == "string" else f"{out} = d[p:q]", path)
            e(ind, "p = q", path)
        elif t == "long":
            self.dec_long(out, ind, path)
        elif t == "double":
            self.names["_u1"] = _DOUBLE[1].unpack_from
            e(ind, f"{out}, = _u1(d, p)", path)
            e(ind, "p += 8", path)
        elif t == "boolean":
            e(ind, "b = d[p]", path)
            e(ind, "p += 1", path)
            e(ind, "if b > 1:", path)
            e(ind + 1, f"raise _Err(f'{path}: boolean byte {{b}} at offset {{p - 1}}')", path)
            e(ind, f"{out} = b == 1", path)
        elif t == "timestamp":
            n = self.var("n")
            self.dec_long(n, ind, path)
            e(ind, f"{out} = _EPOCH + _td(0, 0, {n})", path)
        elif isinstance(t, list):
            null_at, other = self.union_branch(t, path)
            i = self.var("i")
            self.dec_long(i, ind, path)
            e(ind, f"if {i} == {null_at}:", path)
            e(ind + 1, f"{out} = None", path)
            e(ind, f"elif {i} == {1 - null_at}:", path)
            self.dec_value(other, optional_inner(hint), out, ind + 1, path)
            e(ind, "else:", path)
            e(ind + 1, f"raise _Err(f'{path}: union index {{{i}}} out of range')", path)
        elif t["type"] == "array":
            (item_hint,) = typing.get_args(hint) or (Any,)
            items, n, x, k = self.var("items"), self.var("n"), self.var("x"), self.var("k")
            e(ind, f"{items} = []", path)
            e(ind, "while True:", path)
            self.dec_long(n, ind + 1, path)
            e(ind + 1, f"if {n} == 0:", path)
            e(ind + 2, "break", path)
            e(ind + 1, f"if {n} < 0:", path)  # block with its byte size: skip the size
            e(ind + 2, f"{n} = -{n}", path)
            self.dec_long("_size", ind + 2, path)
            # every supported item takes at least one byte: a count past the end is corrupt
            e(ind + 1, f"if {n} > e - p:", path)
            e(ind + 2, f"raise _Err(f'{path}: {{{n}}} items in {{e - p}} bytes')", path)
            e(ind + 1, f"for {k} in range({n}):", path)
            self.dec_value(t["items"], item_hint, x, ind + 2, path + "[]")
            e(ind + 2, f"{items}.append({x})", path)
            e(ind, f"{out} = {items}", path)
        else:
            self.dec_record(t, hint, out, ind, path)

    def dec_record(self, rec: dict[str, Any], cls: Any, out: str, ind: int,
                   path: str, check_end: bool = False) -> None:
        fields = self.record_fields(rec, cls, path)
        self.stack.append(str(rec["name"]))
        values: list[tuple[str, str]] = []
        for group in self._runs(fields, self._is_double):
            gpath = f"{path}.{group[0][0]}".lstrip(".")
            if len(group) > 1:
                unpack = self.const(_DOUBLE[len(group)].unpack_from, "unpack")
                outs = [self.var("v") for _ in group]
                self.emit(ind, f"{', '.join(outs)} = {unpack}(d, p)", gpath)
                self.emit(ind, f"p += {8 * len(group)}", gpath)
                values += [(name, o) for (name, _, _), o in zip(group, outs, strict=True)]
                continue
            name, ftype, hint = group[0]
            fv = self.var("v")
            self.dec_value(ftype, hint, fv, ind, gpath)
            values.append((name, fv))
        self.stack.pop()
        if check_end:
            self.emit(ind, "if p != e:", path)
            self.emit(ind + 1, "raise _Err(f'{e - p} trailing byte(s) after the record')", path)
        ccls = self.const(cls, "C")
        slots_ok = (not hasattr(cls, "__post_init__") and all(
            isinstance(getattr(cls, name, None), types.MemberDescriptorType)
            for name, _ in values))
        if slots_ok:
            # Setting the slots directly is 3x cheaper than the frozen dataclass __init__
            # (one object.__setattr__ per field); every field comes from the wire, so no
            # default is skipped. Classes with __post_init__ or without slots use __init__.
            self.emit(ind, f"{out} = _new({ccls})", path)
            for name, fv in values:
                setter = self.const(getattr(cls, name).__set__, "set")
                self.emit(ind, f"{setter}({out}, {fv})", path)
        else:
            args = ", ".join(f"{name}={fv}" for name, fv in values)
            self.emit(ind, f"{out} = {ccls}({args})", path)


class CompiledRecord:
    """The generated encoder and decoder of one record schema, plus error locations."""

    def __init__(self, schema: dict[str, Any], cls: type):
        name = str(schema["name"]).rsplit(".", 1)[-1]
        self.name = name
        self.cls = cls
        enc = _Gen(schema, cls)
        enc.emit(0, "def encode(o, prefix=b''):", "")
        enc.emit(1, "out = [prefix]", "")
        enc.emit(1, "a = out.append", "")
        if schema.get("type") != "record":
            raise enc.unsupported("", schema.get("type"))
        enc.named[str(schema["name"])] = schema
        enc.enc_record(schema, cls, "o", 1, "")
        enc.emit(1, "return b''.join(out)", "")
        dec = _Gen(schema, cls)
        dec.named[str(schema["name"])] = schema
        dec.emit(0, "def decode(d, p=0):", "")
        dec.emit(1, "if type(d) is not _bytes_t:", "")
        dec.emit(2, "d = _bytes_t(d)", "")
        dec.emit(1, "e = len(d)", "")
        dec.dec_record(schema, cls, "o", 1, "", check_end=True)
        dec.emit(1, "return o", "")
        self.encode_source = "\n".join(enc.lines)
        self.decode_source = "\n".join(dec.lines)
        self._enc_file = f"<avro-compiled encode {name}>"
        self._dec_file = f"<avro-compiled decode {name}>"
        self._paths = {self._enc_file: enc.paths, self._dec_file: dec.paths}
        self.encode: Callable[..., bytes] = _exec(self.encode_source, self._enc_file,
                                                  enc.names, "encode")
        self.decode: Callable[..., Any] = _exec(self.decode_source, self._dec_file,
                                                dec.names, "decode")

    def field_of(self, exc: BaseException) -> str | None:
        """The field whose generated code raised `exc` (None: not raised in there).
        Found from the traceback's line number, so the fast path pays nothing for it."""
        tb: TracebackType | None = exc.__traceback__
        found = None
        while tb is not None:
            paths = self._paths.get(tb.tb_frame.f_code.co_filename)
            if paths is not None and 1 <= tb.tb_lineno <= len(paths):
                found = paths[tb.tb_lineno - 1] or None
            tb = tb.tb_next
        return found


def _exec(source: str, filename: str, names: dict[str, Any], fn: str) -> Callable[..., Any]:
    namespace = dict(names)
    exec(compile(source, filename, "exec"), namespace)  # our own generated source
    return namespace[fn]


def compile_record(schema: dict[str, Any], cls: type) -> CompiledRecord:
    """Compile a fastavro-parsed (or raw) record schema for its dataclass `cls`."""
    return CompiledRecord(schema, cls)


__all__ = ["AvroDecodeError", "CompiledRecord", "UnsupportedSchemaError", "compile_record"]
