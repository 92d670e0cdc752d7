"""API keys, roles and site scope.

A key looks like ``vgl_<key_id>_<secret>``. Only the SHA-256 of the whole key is stored
(keys are long random strings, so a slow password hash buys nothing); the id lets us
find the row without scanning, and the comparison is constant-time.

Roles (DESIGN "API"):
- ``viewer``: reads cameras, sites, events, alerts, search, reports, the live stream;
- ``operator``: a viewer who may also acknowledge and resolve alerts;
- ``auditor``: reads everything, audit trail included, and changes nothing;
- ``admin``: everything, zones and rules included.

A key may be scoped to sites: it then never reads or acts on another site's cameras,
alerts, events or snapshots. A resource outside the scope answers 404, exactly like a
resource that does not exist, so a scoped key cannot probe for other sites' ids.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Literal

import anyio.to_thread
import sqlalchemy as sa
from sqlalchemy import Engine
from starlette.requests import HTTPConnection

from api.errors import ApiError

Role = Literal["viewer", "operator", "auditor", "admin"]
ROLES: tuple[Role, ...] = ("viewer", "operator", "auditor", "admin")

#: What each permission needs. Reading is open to every role; acting is not.
PERMISSIONS: dict[str, frozenset[str]] = {
    "read": frozenset(ROLES),
    "audit": frozenset({"auditor", "admin"}),
    "act": frozenset({"operator", "admin"}),
    "configure": frozenset({"admin"}),
}

KEY_PREFIX = "vgl"


@dataclass(frozen=True, slots=True)
class Principal:
    """Who is calling: the key's id and name (the operator recorded on commands)."""

    key_id: str
    name: str
    role: str
    sites: frozenset[str] | None  # None = every site

    def can(self, permission: str) -> bool:
        return self.role in PERMISSIONS[permission]

    def sees_site(self, site_id: str | None) -> bool:
        return self.sites is None or (site_id is not None and site_id in self.sites)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def keys_table(schema: str) -> sa.Table:
    return sa.Table(
        "api_keys",
        sa.MetaData(schema=schema),
        sa.Column("key_id", sa.Text, primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("sites", sa.ARRAY(sa.Text), nullable=True),
        sa.Column("key_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
    )


class KeyStore:
    """API keys in the API's own schema, with a short in-process cache so that
    authentication costs a dictionary lookup, not a query, on the hot path."""

    def __init__(self, engine: Engine, schema: str, cache_s: float = 10.0):
        self.engine = engine
        self.schema = schema
        self.table = keys_table(schema)
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Principal | None, str]] = {}

    def ensure_schema(self) -> None:
        # Several API worker processes start at once: serialise the check-then-create
        # (a session lock, since the API's engine runs in autocommit).
        lock = sa.text("SELECT pg_advisory_lock(hashtext(:k))")
        unlock = sa.text("SELECT pg_advisory_unlock(hashtext(:k))")
        with self.engine.connect() as conn:
            conn.execute(lock, {"k": f"vigil-api-keys:{self.schema}"})
            try:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                self.table.metadata.create_all(conn)
                conn.commit()
            finally:
                conn.execute(unlock, {"k": f"vigil-api-keys:{self.schema}"})

    def create(self, name: str, role: str, sites: list[str] | None = None) -> tuple[str, str]:
        """Create a key; returns (key_id, key). The key is shown once and never stored."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        with self.engine.begin() as conn:
            conn.execute(
                self.table.insert().values(
                    key_id=key_id, name=name, role=role,
                    sites=sorted(sites) if sites else None, key_hash=hash_key(key),
                )
            )
        return key_id, key

    def revoke(self, key_id: str) -> bool:
        with self.engine.begin() as conn:
            res = conn.execute(
                self.table.update()
                .where(self.table.c.key_id == key_id, self.table.c.revoked_at.is_(None))
                .values(revoked_at=sa.func.now())
            )
        self._cache.pop(key_id, None)
        return bool(res.rowcount)

    def _lookup(self, key_id: str) -> sa.Row | None:
        with self.engine.connect() as conn:
            return conn.execute(
                sa.select(self.table).where(
                    self.table.c.key_id == key_id, self.table.c.revoked_at.is_(None)
                )
            ).first()

    def cached(self, key: str) -> Principal | None:
        """The principal if `key` is verified and still cached: no I/O, so the caller can
        tell a known-good key from one that would cost a database lookup."""
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            return None
        cached = self._cache.get(parts[1])
        if cached is None or cached[0] < time.monotonic() or cached[1] is None:
            return None
        return cached[1] if hmac.compare_digest(cached[2], hash_key(key)) else None

    async def authenticate(self, key: str) -> Principal | None:
        parts = key.split("_", 2)
        if len(parts) != 3 or parts[0] != KEY_PREFIX or not parts[1]:
            return None
        key_id = parts[1]
        digest = hash_key(key)
        now = time.monotonic()
        cached = self._cache.get(key_id)
        if cached is None or cached[0] < now:
            row = await anyio.to_thread.run_sync(self._lookup, key_id)
            principal = None
            stored = ""
            if row is not None:
                stored = row.key_hash
                principal = Principal(
                    key_id=row.key_id, name=row.name, role=row.role,
                    sites=frozenset(row.sites) if row.sites else None,
                )
            if len(self._cache) > 10_000:  # unbounded guesses must not grow memory
                self._cache.clear()
            self._cache[key_id] = (now + self.cache_s, principal, stored)
            cached = self._cache[key_id]
        _, principal, stored = cached
        if principal is None or not hmac.compare_digest(stored, digest):
            return None
        return principal


def bearer_key(conn: HTTPConnection) -> str | None:
    """The key from ``Authorization: Bearer …`` or ``X-API-Key``."""
    auth = conn.headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer" and value.strip():
            return value.strip()
    return conn.headers.get("x-api-key") or None


def principal_of(conn: HTTPConnection) -> Principal:
    principal = conn.scope.get("principal")
    if not isinstance(principal, Principal):
        raise ApiError(401, "an API key is required", headers={"WWW-Authenticate": "Bearer"})
    return principal


def require(conn: HTTPConnection, permission: str) -> Principal:
    principal = principal_of(conn)
    if not principal.can(permission):
        raise ApiError(
            403,
            f"role {principal.role!r} may not {permission}",
            details={"role": principal.role, "needs": sorted(PERMISSIONS[permission])},
        )
    return principal
