"""What the handlers need, built once per app and reached through ``app.state.deps``.

The database engine is a synchronous SQLAlchemy engine (psycopg 3) driven from a thread
pool: the read-model queries are short, the pool bounds concurrency, and it spares the
project a greenlet dependency that SQLAlchemy's asyncio layer would need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio.to_thread
from sqlalchemy import Connection, Engine, create_engine
from starlette.requests import HTTPConnection

from api.auth import KeyStore
from api.metrics import ApiMetrics
from api.publisher import Publisher
from api.ratelimit import RateLimiter
from api.settings import ApiSettings
from projections.tables import in_schema
from vigil.settings import Settings

T = TypeVar("T")


def make_engine(database_url: str, pool_size: int = 10, statement_timeout_ms: int = 5000
                ) -> Engine:
    """The API's engine: bounded pool and a server-side statement timeout, so one slow
    query cannot hold a connection (and a thread) forever."""
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=True,
        pool_timeout=5,
        connect_args={"options": f"-c statement_timeout={statement_timeout_ms}",
                      "connect_timeout": 5},
    )


@dataclass
class Deps:
    settings: Settings
    api: ApiSettings
    engine: Engine
    read_schema: str
    publisher: Publisher
    keys: KeyStore
    limiter: RateLimiter
    metrics: ApiMetrics
    #: Object store client (minio.Minio) or None when not configured.
    object_store: Any = None
    #: Async callable (image bytes -> list[float]) calling Triton; None = unavailable.
    embed_image: Callable[[bytes], Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` with a connection bound to the read-model schema, off the event loop."""

        def work() -> T:
            with self.engine.connect() as conn:
                return fn(in_schema(conn, self.read_schema))

        return await anyio.to_thread.run_sync(work)


def deps_of(conn: HTTPConnection) -> Deps:
    return conn.app.state.deps  # type: ignore[no-any-return]
