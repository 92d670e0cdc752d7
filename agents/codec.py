"""The topic boundary for Faust: Avro bytes in, typed events out.

Registered as the Faust codec ``"vigil"``. Decoding never raises: Faust skips a message
whose value fails to decode (and only logs it), which would lose a poison message
silently. Instead an undecodable value arrives in the agent as `Undecodable`, carrying the
original bytes and the reason, and the agent sends it to the DLQ.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from faust.serializers import codecs

from schemas.codec import CodecError, default_codec
from schemas.events import Event


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A value that is not a valid Vigil event, with the reason."""

    raw: bytes
    reason: str


class VigilAvroCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        if isinstance(obj, Event):
            return default_codec().encode(obj)
        if isinstance(obj, (bytes, bytearray)):
            return bytes(obj)
        raise CodecError(f"cannot serialise {type(obj).__name__} on a Vigil topic")

    def _loads(self, s: bytes) -> Any:
        try:
            return default_codec().decode(s)
        except CodecError as exc:
            return Undecodable(raw=bytes(s) if s is not None else b"", reason=str(exc))


codecs.register("vigil", VigilAvroCodec())
