"""What projector and API agree on about the read model: where it lives and when it is stale.

The projector writes the read model and the API reads it, so the few settings both need
(``VIGIL_PROJECTOR_SCHEMA``, ``VIGIL_PROJECTOR_CONSUMER``,
``VIGIL_PROJECTOR_READ_MODEL_STALE_S``, ``VIGIL_PROJECTOR_EMBEDDING_RETENTION_H``) are
declared here, once, in the contract layer;
`projections.settings.ProjectorSettings` extends them with the projector's own knobs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import cache

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from vigil.settings import load_component_settings

PREFIX = "VIGIL_PROJECTOR_"


def plain_identifier(v: str) -> str:
    """A schema name as PostgreSQL folds it, or ValueError: it is put into SQL unquoted."""
    if not v or not (v[0].isalpha() or v[0] == "_") or not all(
        c.isalnum() or c == "_" for c in v
    ) or len(v) > 63:
        raise ValueError("must be a plain SQL identifier (letters, digits, '_')")
    return v.lower()


class ReadModelSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=PREFIX, extra="forbid", frozen=True,
                                      populate_by_name=True)

    #: PostgreSQL schema of the live read models (the API reads the same variable).
    schema_name: str = Field("vigil", validation_alias="VIGIL_PROJECTOR_SCHEMA")
    #: Name under which offsets are stored in projector_offsets.
    consumer: str = "projector"
    #: /health/ready (projector) and /health/deep (API) fail once the read model has not
    #: been caught up with Kafka for this long (s).
    read_model_stale_s: float = Field(120.0, gt=0)
    #: Embeddings are personal data, searchable for this long (h). Retention drops whole
    #: daily partitions once they are entirely older, so a row can stay on disk up to a
    #: day longer; the API's appearance search never returns or uses it past this age.
    embedding_retention_h: float = Field(72.0, gt=0)

    @field_validator("schema_name")
    @classmethod
    def _schema(cls, v: str) -> str:
        return plain_identifier(v)


def load_read_model_settings(env: Mapping[str, str] | None = None) -> ReadModelSettings:
    """The read-model settings alone, for a reader (the API) of the projector's variables.

    Only this class's own variables are looked at: the projector's other ``VIGIL_PROJECTOR_*``
    knobs are the projector's to validate (it does, at its start)."""
    environ = os.environ if env is None else env
    own = {f.validation_alias if isinstance(f.validation_alias, str) else PREFIX + n.upper()
           for n, f in ReadModelSettings.model_fields.items()}
    return load_component_settings(ReadModelSettings, PREFIX,
                                   {k: v for k, v in environ.items() if k in own})


@cache
def get_read_model_settings() -> ReadModelSettings:
    """Validated once per process, like every other settings class."""
    return load_read_model_settings()
