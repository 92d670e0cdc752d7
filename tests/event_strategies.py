"""Hypothesis strategies for Vigil's events and for arbitrary Avro schemas.

`event_strategy(cls)` builds valid instances of an event record from its type hints, so a
new event type is covered by the codec tests without writing a strategy by hand.
`avro_datum(schema)` builds values valid for a parsed Avro schema, for the schemas that
have no Python record (the committed history versions).

Importable from every test module: `tests/` is on sys.path through its conftest.py.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from datetime import UTC, datetime
from functools import cache
from typing import Any

from hypothesis import strategies as st

from schemas.events import EVENT_TYPES, Event

LONG_MIN, LONG_MAX = -(2**63), 2**63 - 1

#: Avro timestamp-micros holds any Python datetime; keep the whole range.
timestamps = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31, 23, 59, 59, 999_999),
    timezones=st.just(UTC),
)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
longs = st.integers(LONG_MIN, LONG_MAX)
short_text = st.text(max_size=24)


def _hint_strategy(tp: Any) -> st.SearchStrategy[Any]:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        return st.one_of(*(_hint_strategy(a) for a in args))
    if tp is type(None):
        return st.none()
    if origin is typing.Literal:  # a closed vocabulary (schemas.events): one of its values
        return st.sampled_from(typing.get_args(tp))
    if origin is list:
        (item,) = typing.get_args(tp)
        return st.lists(_hint_strategy(item), max_size=4)
    if dataclasses.is_dataclass(tp):
        return record_strategy(tp)  # type: ignore[arg-type]
    simple: dict[Any, st.SearchStrategy[Any]] = {
        str: short_text,
        int: longs,
        float: finite_floats,
        bool: st.booleans(),
        bytes: st.binary(max_size=64),
        datetime: timestamps,
    }
    if tp in simple:
        return simple[tp]
    raise TypeError(f"no strategy for type hint {tp!r}: extend tests/event_strategies.py")


@cache
def record_strategy(cls: type) -> st.SearchStrategy[Any]:
    """Any valid instance of a frozen record, from its type hints."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: _hint_strategy(hints[f.name]) for f in dataclasses.fields(cls)}
    if issubclass(cls, Event):
        fields["event_type"] = st.just(cls.__name__)
        fields["event_id"] = st.uuids().map(str)
    return st.builds(cls, **fields)


def event_strategy(cls: type[Event]) -> st.SearchStrategy[Event]:
    return record_strategy(cls)


any_event: st.SearchStrategy[Event] = st.sampled_from(sorted(EVENT_TYPES)).flatmap(
    lambda name: event_strategy(EVENT_TYPES[name])
)


def one_of_each_event() -> st.SearchStrategy[tuple[Event, ...]]:
    return st.tuples(*(event_strategy(EVENT_TYPES[name]) for name in sorted(EVENT_TYPES)))


# ----------------------------------------------------------------- from Avro schemas


def avro_datum(schema: Any, named: dict[str, Any] | None = None) -> st.SearchStrategy[Any]:
    """Values valid for a fastavro-parsed schema (records as dicts)."""
    named = {} if named is None else named
    if isinstance(schema, list):
        return st.one_of(*(avro_datum(s, named) for s in schema))
    if isinstance(schema, str):
        primitive = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": st.integers(-(2**31), 2**31 - 1),
            "long": longs,
            "float": st.floats(allow_nan=False, allow_infinity=False, width=32),
            "double": finite_floats,
            "bytes": st.binary(max_size=64),
            "string": short_text,
        }
        if schema in primitive:
            return primitive[schema]
        return named[schema]
    logical = schema.get("logicalType")
    if logical in ("timestamp-micros", "timestamp-millis"):
        if logical == "timestamp-millis":
            return timestamps.map(lambda d: d.replace(microsecond=d.microsecond // 1000 * 1000))
        return timestamps
    kind = schema["type"]
    if kind == "record":
        strategy = st.fixed_dictionaries(
            {f["name"]: avro_datum(f["type"], named) for f in schema["fields"]}
        )
        named[schema["name"]] = strategy
        return strategy
    if kind == "array":
        return st.lists(avro_datum(schema["items"], named), max_size=4)
    if kind == "map":
        return st.dictionaries(short_text, avro_datum(schema["values"], named), max_size=4)
    if kind == "enum":
        strategy = st.sampled_from(schema["symbols"])
        named[schema["name"]] = strategy
        return strategy
    if kind == "fixed":
        strategy = st.binary(min_size=schema["size"], max_size=schema["size"])
        named[schema["name"]] = strategy
        return strategy
    return avro_datum(kind, named)
