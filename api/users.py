"""Human users of the console: passwords, login throttling and sessions.

API keys (`api.auth`) are for programs; people log in with a name and a password and get a
session cookie. Both end up as the same `Principal` (role and site scope), so the console
can do exactly what the JSON API lets that role do, and nothing else.

Why these choices:
- Passwords are hashed with Argon2id (argon2-cffi's defaults: memory-hard, so a stolen
  table costs an attacker memory as well as time per guess). An unknown user name is
  checked against a dummy hash, so the answer and its timing do not reveal which names
  exist.
- Failed logins are counted per user name in PostgreSQL, for names that exist and names
  that do not alike (again: nothing to tell them apart), so every API process and replica
  sees the same count. After `login_slow_after` failures each answer is delayed, after
  `login_max_failures` the name is locked for `login_lockout_s`; a success clears it.
- A session token is 32 random bytes; only its SHA-256 is stored (like API keys: a long
  random secret needs no slow hash). A session has an absolute lifetime and an idle
  timeout; logout deletes it. Each session has its own CSRF token, which every
  state-changing request made with the cookie must echo in ``X-CSRF-Token``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Engine
from sqlalchemy.dialects.postgresql import insert as pg_insert

from api.auth import ROLES, Principal

#: Principal.key_id of a console user: distinct from every API key id (hex).
USER_PREFIX = "user:"
_HASHER = PasswordHasher()
#: Verified against when the user does not exist, so that path costs the same.
_DUMMY_HASH = _HASHER.hash("vigil-no-such-user")
MIN_PASSWORD_LENGTH = 10


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def tables(schema: str) -> tuple[sa.Table, sa.Table, sa.Table]:
    md = sa.MetaData(schema=schema)
    users = sa.Table(
        "users", md,
        sa.Column("username", sa.Text, primary_key=True),
        sa.Column("role", sa.Text, nullable=False),
        sa.Column("sites", sa.ARRAY(sa.Text), nullable=True),
        sa.Column("password_hash", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.func.now()),
        sa.Column("disabled_at", sa.DateTime(timezone=True), nullable=True),
    )
    failures = sa.Table(
        "login_failures", md,
        sa.Column("username", sa.Text, primary_key=True),
        sa.Column("failures", sa.Integer, nullable=False),
        sa.Column("last_failed_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True),
    )
    sessions = sa.Table(
        "sessions", md,
        sa.Column("token_hash", sa.Text, primary_key=True),
        sa.Column("username", sa.Text, nullable=False, index=True),
        sa.Column("csrf_token", sa.Text, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
    )
    return users, failures, sessions


@dataclass(frozen=True, slots=True)
class LoginPolicy:
    slow_after: int = 3
    max_failures: int = 10
    lockout_s: float = 900.0
    #: Delay per failure beyond `slow_after` (doubling), capped at `max_delay_s`.
    base_delay_s: float = 0.5
    max_delay_s: float = 8.0

    def delay_for(self, failures: int) -> float:
        """Seconds to hold the answer after the `failures`-th consecutive failure."""
        if failures <= self.slow_after:
            return 0.0
        return min(self.max_delay_s, self.base_delay_s * 2 ** (failures - self.slow_after - 1))


@dataclass(frozen=True, slots=True)
class Session:
    principal: Principal
    csrf_token: str
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LoginResult:
    """`token` is set on success; `delay_s` is how long the caller holds the answer."""

    token: str | None
    delay_s: float = 0.0


class UserStore:
    """Users, login failures and sessions in the API's own schema (next to the keys)."""

    def __init__(self, engine: Engine, schema: str, *, session_ttl_s: float = 12 * 3600,
                 idle_timeout_s: float = 3600, policy: LoginPolicy | None = None,
                 cache_s: float = 2.0) -> None:
        self.engine = engine
        self.schema = schema
        self.users, self.failures, self.sessions = tables(schema)
        self.session_ttl = timedelta(seconds=session_ttl_s)
        self.idle_timeout = timedelta(seconds=idle_timeout_s)
        self.policy = policy or LoginPolicy()
        self.cache_s = cache_s
        self._cache: dict[str, tuple[float, Session | None]] = {}

    def ensure_schema(self) -> None:
        lock = sa.text("SELECT pg_advisory_lock(hashtext(:k))")
        unlock = sa.text("SELECT pg_advisory_unlock(hashtext(:k))")
        with self.engine.connect() as conn:
            conn.execute(lock, {"k": f"vigil-api-users:{self.schema}"})
            try:
                conn.execute(sa.text(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"'))
                self.users.metadata.create_all(conn)
                conn.commit()
            finally:
                conn.execute(unlock, {"k": f"vigil-api-users:{self.schema}"})

    # ------------------------------------------------------------------ users
    def create(self, username: str, password: str, role: str,
               sites: list[str] | None = None) -> None:
        """Create a user; raises ValueError naming what is wrong."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; one of {', '.join(ROLES)}")
        if not username or len(username) > 100 or not username.isprintable() \
                or username != username.strip():
            raise ValueError("a user name is 1-100 printable characters without "
                             "surrounding spaces")
        if len(password) < MIN_PASSWORD_LENGTH:
            raise ValueError(f"a password has at least {MIN_PASSWORD_LENGTH} characters")
        with self.engine.begin() as conn:
            exists = conn.execute(sa.select(self.users.c.username)
                                  .where(self.users.c.username == username)).first()
            if exists:
                raise ValueError(f"user {username!r} exists already")
            conn.execute(self.users.insert().values(
                username=username, role=role, sites=sorted(sites) if sites else None,
                password_hash=_HASHER.hash(password)))

    def disable(self, username: str) -> bool:
        """Disable a user and end their sessions."""
        with self.engine.begin() as conn:
            res = conn.execute(self.users.update()
                               .where(self.users.c.username == username,
                                      self.users.c.disabled_at.is_(None))
                               .values(disabled_at=sa.func.now()))
            conn.execute(self.sessions.delete().where(self.sessions.c.username == username))
        self._cache.clear()
        return bool(res.rowcount)

    # ------------------------------------------------------------------ login
    def login(self, username: str, password: str, now: datetime | None = None) -> LoginResult:
        """Check a password; every failure (unknown name, wrong password, disabled or
        locked user) is the same `LoginResult(None, delay)`, at the same cost."""
        now = now or datetime.now(UTC)
        name = username.strip()[:100]
        with self.engine.begin() as conn:
            user = conn.execute(sa.select(self.users).where(
                self.users.c.username == name)).first()
            failed = conn.execute(sa.select(self.failures).where(
                self.failures.c.username == name).with_for_update()).first()
            locked = failed is not None and failed.locked_until is not None \
                and failed.locked_until > now
            ok = self._verify(user.password_hash if user else _DUMMY_HASH, password)
            ok = ok and user is not None and user.disabled_at is None and not locked
            if ok:
                conn.execute(self.failures.delete().where(self.failures.c.username == name))
                token = secrets.token_urlsafe(32)
                conn.execute(self.sessions.insert().values(
                    token_hash=_token_hash(token), username=name,
                    csrf_token=secrets.token_urlsafe(32), created_at=now,
                    expires_at=now + self.session_ttl, last_seen_at=now))
                conn.execute(self.sessions.delete().where(self.sessions.c.expires_at < now))
                return LoginResult(token)
            # A count older than the lockout window starts again.
            stale = failed is None or (now - failed.last_failed_at).total_seconds() \
                > self.policy.lockout_s
            count = 1 if failed is None or stale else failed.failures + 1
            locked_until = (now + timedelta(seconds=self.policy.lockout_s)
                            if count >= self.policy.max_failures else None)
            if locked and failed is not None:
                locked_until = failed.locked_until
            stmt = pg_insert(self.failures).values(
                username=name, failures=count, last_failed_at=now, locked_until=locked_until)
            conn.execute(stmt.on_conflict_do_update(
                index_elements=[self.failures.c.username],
                set_={"failures": count, "last_failed_at": now, "locked_until": locked_until}))
            return LoginResult(None, self.policy.delay_for(count))

    @staticmethod
    def _verify(stored: str, password: str) -> bool:
        try:
            return _HASHER.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    # ------------------------------------------------------------------ sessions
    def session(self, token: str, now: datetime | None = None,
                touch: bool = True) -> Session | None:
        """The live session for a cookie value, or None (unknown, expired, idle).

        A request counts as activity (`touch`); a live stream re-checking the session that
        opened it does not, so a console left open still reaches its idle timeout."""
        if not token or len(token) > 200:
            return None
        digest = _token_hash(token)
        mono = time.monotonic()
        cached = self._cache.get(digest)
        if cached is not None and cached[0] > mono:
            return cached[1]
        now = now or datetime.now(UTC)
        j = self.sessions.join(self.users, self.users.c.username == self.sessions.c.username)
        with self.engine.begin() as conn:
            row = conn.execute(
                sa.select(self.sessions.c.csrf_token, self.sessions.c.expires_at,
                          self.sessions.c.last_seen_at, self.users.c.username,
                          self.users.c.role, self.users.c.sites)
                .select_from(j)
                .where(self.sessions.c.token_hash == digest,
                       self.users.c.disabled_at.is_(None))).first()
            found: Session | None = None
            if row is not None and row.expires_at > now \
                    and now - row.last_seen_at <= self.idle_timeout:
                found = Session(
                    Principal(key_id=f"{USER_PREFIX}{row.username}", name=row.username,
                              role=row.role,
                              sites=frozenset(row.sites) if row.sites else None,
                              expires_at=row.expires_at),
                    row.csrf_token, row.expires_at)
                if touch and (now - row.last_seen_at).total_seconds() > 60:
                    conn.execute(self.sessions.update()
                                 .where(self.sessions.c.token_hash == digest)
                                 .values(last_seen_at=now))
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[digest] = (mono + self.cache_s, found)
        return found

    def logout(self, token: str) -> None:
        digest = _token_hash(token)
        with self.engine.begin() as conn:
            conn.execute(self.sessions.delete().where(self.sessions.c.token_hash == digest))
        self._cache.pop(digest, None)


def csrf_matches(expected: str, given: str | None) -> bool:
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())
