"""What the handlers need, built once per app and reached through ``app.state.deps``.

The database engine is a synchronous SQLAlchemy engine (psycopg 3) driven from a thread
pool: the read-model queries are short, the pool bounds concurrency, and it spares the
project a greenlet dependency that SQLAlchemy's asyncio layer would need.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import anyio
import anyio.to_thread
from sqlalchemy import Connection, Engine, create_engine
from starlette.requests import HTTPConnection

from api.auth import KeyStore
from api.metrics import ApiMetrics
from api.publisher import Publisher
from api.settings import ApiSettings
from schemas.tables import in_schema
from vigil.ratelimit import RateLimiter
from vigil.settings import Settings

T = TypeVar("T")


def make_engine(database_url: str, pool_size: int = 10, statement_timeout_ms: int = 5000
                ) -> Engine:
    """The API's engine: bounded pool and a server-side statement timeout, so one slow
    query cannot hold a connection (and a thread) forever.

    Round trips are the cost of a read, so a read is exactly one: autocommit (no BEGIN
    and ROLLBACK around each query; every API statement stands alone, the few writes
    to the key table included) and no pre-ping. A connection found dead is invalidated
    with the pool by SQLAlchemy, that one request answers 503 (see `api.errors`) and
    the next ones reconnect; recycling bounds a connection's age. Sessions run in UTC
    so timestamps serialise without a conversion per value.
    """
    return create_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=pool_size,
        isolation_level="AUTOCOMMIT",
        pool_reset_on_return=None,
        pool_recycle=1800,
        pool_timeout=5,
        connect_args={"options": f"-c statement_timeout={statement_timeout_ms} "
                                 "-c timezone=UTC",
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
    #: Requests without a verified key, per client address.
    anon_limiter: RateLimiter
    metrics: ApiMetrics
    #: Object store client (minio.Minio) or None when not configured.
    object_store: Any = None
    #: Async callable (image bytes -> list[float]) calling Triton; None = unavailable.
    embed_image: Callable[[bytes], Any] | None = None
    #: Console users and sessions (`api.users.UserStore`); None = no console login.
    users: Any = None
    #: Appearance search reaches this far back at most (VIGIL_PROJECTOR_EMBEDDING_RETENTION_H).
    embedding_retention_h: float = 72.0
    extra: dict[str, Any] = field(default_factory=dict)
    #: Threads allowed into the database at once: one per pooled connection, so no
    #: thread holds the GIL only to wait for a connection (see `read`).
    _limiter: anyio.CapacityLimiter | None = None

    async def read(self, fn: Callable[[Connection], T]) -> T:
        """Run `fn` with a connection bound to the read-model schema, off the event loop."""

        def work() -> T:
            with self.engine.connect() as conn:
                return fn(in_schema(conn, self.read_schema))

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.api.db_pool_size)
        return await anyio.to_thread.run_sync(work, limiter=self._limiter)


def deps_of(conn: HTTPConnection) -> Deps:
    return conn.app.state.deps  # type: ignore[no-any-return]
