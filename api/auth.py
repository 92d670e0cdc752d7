"""API keys, roles and site scope.

A key looks like ``vgl_<key_id>_<secret>``. Only the SHA-256 of the whole key is stored
(keys are long random strings, so a slow password hash buys nothing); the id lets us
find the row without scanning, and the comparison is constant-time.

Roles:
- ``viewer``: reads cameras, sites, events, alerts, search, reports, the live stream;
- ``operator``: a viewer who may also acknowledge and resolve alerts;
- ``auditor``: reads everything, audit trail included, and changes nothing;
- ``admin``: everything, zones and rules included.

A key may be scoped to sites: it then never reads or acts on another site's cameras,
alerts, events or snapshots. A resource outside the scope answers 404, exactly like a
resource that does not exist, so a scoped key cannot probe for other sites' ids.

A key may expire (``expires_at``): past it the key answers 401 ``key_expired`` with the
moment it expired, so a client knows to ask for a new key rather than retry. `rotate`
issues a successor with the same name, role and sites and lets the old key live on for
a grace period, so a deployment can switch keys without a gap (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
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
    expires_at: datetime | None = None  # None = never

    def expired(self, now: datetime | None = None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or datetime.now(UTC))

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
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("rotated_to", sa.Text, nullable=True),
    )


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """A key as `vigil api keys list` shows it: never the key nor its hash."""

    key_id: str
    name: str
    role: str
    sites: list[str] | None
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_to: str | None


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
                # key tables made before expiry existed gain its columns
                for col in ("expires_at timestamptz", "rotated_to text"):
                    conn.execute(sa.text(f'ALTER TABLE "{self.schema}".api_keys '
                                         f"ADD COLUMN IF NOT EXISTS {col}"))
                conn.commit()
            finally:
                conn.execute(unlock, {"k": f"vigil-api-keys:{self.schema}"})

    def create(self, name: str, role: str, sites: list[str] | None = None,
               expires_in: timedelta | None = None,
               conn: sa.Connection | None = None) -> tuple[str, str]:
        """Create a key; returns (key_id, key). The key is shown once and never stored."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if expires_in is not None and expires_in <= timedelta(0):
            raise ValueError("expires_in must be positive")
        key_id = secrets.token_hex(6)
        key = f"{KEY_PREFIX}_{key_id}_{secrets.token_urlsafe(32)}"
        values = dict(key_id=key_id, name=name, role=role,
                      sites=sorted(sites) if sites else None, key_hash=hash_key(key),
                      expires_at=datetime.now(UTC) + expires_in if expires_in else None)
        if conn is not None:
            conn.execute(self.table.insert().values(**values))
        else:
            with self.engine.begin() as c:
                c.execute(self.table.insert().values(**values))
        return key_id, key

    def rotate(self, key_id: str, grace: timedelta = timedelta(0),
               expires_in: timedelta | None = None) -> tuple[str, str]:
        """Issue a successor of active key `key_id` (same name, role, sites) and let the
        old key expire after `grace` (0: at once). Returns the new (key_id, key).

        `expires_in` is the new key's lifetime; by default it gets the old key's lifetime
        (created -> expiry) again, or none if the old key had none."""
        t = self.table
        now = datetime.now(UTC)
        with self.engine.begin() as conn:
            old = conn.execute(sa.select(t).where(
                t.c.key_id == key_id, t.c.revoked_at.is_(None)).with_for_update()).first()
            if old is None:
                raise LookupError(f"no active key {key_id!r}")
            if old.rotated_to is not None:
                raise LookupError(f"key {key_id!r} was already rotated to {old.rotated_to!r}")
            if expires_in is None and old.expires_at is not None:
                expires_in = old.expires_at - old.created_at
            new_id, key = self.create(old.name, old.role, old.sites, expires_in, conn=conn)
            ends = now + grace
            if old.expires_at is not None and old.expires_at < ends:
                ends = old.expires_at
            conn.execute(t.update().where(t.c.key_id == key_id)
                         .values(expires_at=ends, rotated_to=new_id))
        self._cache.pop(key_id, None)
        return new_id, key

    def list(self) -> list[KeyInfo]:
        t = self.table
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(
                t.c.key_id, t.c.name, t.c.role, t.c.sites, t.c.created_at, t.c.expires_at,
                t.c.revoked_at, t.c.rotated_to).order_by(t.c.created_at, t.c.key_id)).all()
        return [KeyInfo(**r._mapping) for r in rows]

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
        if cached[1].expired():  # the slow path says why (key_expired)
            return None
        return cached[1] if hmac.compare_digest(cached[2], hash_key(key)) else None

    async def authenticate(self, key: str) -> Principal | None:
        """The key's principal, or None for an unknown, revoked or malformed key. An
        expired key's principal is returned: the caller answers `key_expired`."""
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
                    expires_at=row.expires_at,
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


def expired_error(principal: Principal) -> ApiError:
    """401 for a key past its expiry, saying when and what to do."""
    assert principal.expires_at is not None
    at = principal.expires_at.astimezone(UTC).isoformat(timespec="seconds")
    return ApiError(401, f"this API key expired at {at}; ask an administrator for a new "
                         f"one (vigil api keys rotate {principal.key_id})",
                    error="key_expired", details={"key_id": principal.key_id,
                                                  "expired_at": at},
                    headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


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
