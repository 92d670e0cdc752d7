"""Records as the dicts fastavro writes: the reference the compiled codec
(schemas/avro_compiled.py) is tested against, and what the Apache library's decoded records
are compared with. Test-only since the codec encodes through the compiled encoder."""

from __future__ import annotations

import dataclasses
import typing
from functools import cache
from typing import Any

from schemas.avro_compiled import optional_inner


@cache
def _field_names(cls: type) -> tuple[tuple[str, bool], ...]:
    """(name, may hold records) per field, computed once per class."""
    hints = typing.get_type_hints(cls)
    out = []
    for f in dataclasses.fields(cls):
        inner = optional_inner(hints[f.name])
        args = typing.get_args(inner) if typing.get_origin(inner) is list else ()
        nested = dataclasses.is_dataclass(inner) or any(dataclasses.is_dataclass(a)
                                                        for a in args)
        out.append((f.name, nested or inner is Any))
    return tuple(out)


def to_avro_dict(obj: Any) -> dict[str, Any]:
    """Shallow-walk a record into the dict fastavro writes (no deep copies of bytes)."""
    out: dict[str, Any] = {}
    for name, nested in _field_names(type(obj)):
        value = getattr(obj, name)
        if nested:
            if dataclasses.is_dataclass(value):
                value = to_avro_dict(value)
            elif isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                value = [to_avro_dict(v) for v in value]
        out[name] = value
    return out
