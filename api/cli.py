"""`vigil api serve`, `vigil api keys create|list|rotate|revoke`, `vigil users create|disable`."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import TYPE_CHECKING

from api.auth import ROLES

if TYPE_CHECKING:  # imported where used: `vigil api` subcommands load only what they run
    from starlette.applications import Starlette

    from api.auth import KeyStore
    from api.users import UserStore


def triton_probe(url: str, model: str) -> Callable[[], Awaitable[str | None]]:
    """The deep-health probe of Triton: the model the API embeds with is ready."""

    async def probe() -> str | None:
        from tritonclient.grpc.aio import InferenceServerClient

        client = InferenceServerClient(url)
        try:
            ok = await client.is_model_ready(model)
        finally:
            await client.close()
        if not ok:
            raise RuntimeError(f"model {model} not ready")
        return "model ready"

    return probe


def build_app() -> Starlette:
    """The production wiring: real engine, producer, object store and Triton."""
    from api.app import create_app
    from api.deps import make_engine
    from api.search import triton_embedder
    from api.settings import load_api_settings
    from schemas.producer import EventProducer
    from vigil.objects import make_client
    from vigil.settings import get_settings

    settings = get_settings()
    api = load_api_settings()
    store = make_client(settings=settings)

    return create_app(
        settings, make_engine(settings.database_url, pool_size=api.db_pool_size),
        EventProducer(), api_settings=api,
        object_store=store, embed_image=triton_embedder(settings.triton_url, api.triton_model),
        triton_probe=triton_probe(settings.triton_url, api.triton_model),
    )


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.settings import load_api_settings
    from vigil.settings import get_settings

    settings = get_settings()
    workers = args.workers or load_api_settings().workers
    # Several workers need the app as an import string (each process builds its own);
    # one worker builds it here so that bad configuration fails before binding.
    app = "api.cli:build_app" if workers > 1 else build_app()
    uvicorn.run(
        app, factory=workers > 1, workers=workers,
        host=args.host or settings.api_host, port=args.port or settings.api_port,
        log_level="warning", access_log=False,  # access logs would carry query strings
        proxy_headers=False,
    )
    return 0


def _keystore() -> KeyStore:
    from api.auth import KeyStore
    from api.deps import make_engine
    from api.settings import load_api_settings
    from vigil.settings import get_settings

    api = load_api_settings()
    store = KeyStore(make_engine(get_settings().database_url, pool_size=1), api.keys_schema)
    store.ensure_schema()
    return store


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> timedelta:
    """``90d``, ``12h``, ``30m``, ``45s``, ``2w`` (argparse type)."""
    m = re.fullmatch(r"\s*(\d+)\s*([smhdw])\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a duration like 90d, 12h, 30m, 45s or 2w")
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


def _show_new_key(key_id: str, key: str) -> None:
    print(f"key id: {key_id}", file=sys.stderr)
    print("store this key now; it is not kept and cannot be shown again:", file=sys.stderr)
    print(key)


def _create(args: argparse.Namespace) -> int:
    key_id, key = _keystore().create(args.name or f"{args.role}-key", args.role,
                                     args.site or None, expires_in=args.expires_in)
    _show_new_key(key_id, key)
    return 0


def _rotate(args: argparse.Namespace) -> int:
    try:
        key_id, key = _keystore().rotate(args.key_id, grace=args.grace,
                                         expires_in=args.expires_in)
    except LookupError as exc:
        print(str(exc).strip("'\""), file=sys.stderr)
        return 1
    print(f"key {args.key_id} expires in {args.grace} (replaced by {key_id})", file=sys.stderr)
    _show_new_key(key_id, key)
    return 0


def _list(args: argparse.Namespace) -> int:
    for k in _keystore().list():
        state = ("revoked" if k.revoked_at else
                 f"expires {k.expires_at.isoformat(timespec='seconds')}" if k.expires_at
                 else "no expiry")
        sites = ",".join(k.sites) if k.sites else "*"
        rotated = f" rotated_to={k.rotated_to}" if k.rotated_to else ""
        print(f"{k.key_id}  {k.role:<8} sites={sites}  {state}{rotated}  {k.name}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    ok = _keystore().revoke(args.key_id)
    print("revoked" if ok else "no such active key", file=sys.stderr)
    return 0 if ok else 1


def _userstore() -> UserStore:
    from api.deps import make_engine
    from api.settings import load_api_settings
    from api.users import UserStore
    from vigil.settings import get_settings

    api = load_api_settings()
    store = UserStore(make_engine(get_settings().database_url, pool_size=1), api.keys_schema)
    store.ensure_schema()
    return store


def _read_password() -> str:
    """Prompted twice on a terminal; otherwise the first line of standard input (so a
    script can pipe it in without it appearing in the process list)."""
    import getpass

    if sys.stdin.isatty():
        first = getpass.getpass("password: ")
        if getpass.getpass("again: ") != first:
            raise SystemExit("vigil users create: the passwords differ")
        return first
    return sys.stdin.readline().rstrip("\r\n")


def _user_create(args: argparse.Namespace) -> int:
    from vigil.errors import VigilError

    try:
        _userstore().create(args.name, _read_password(), args.role, args.site or None)
    except ValueError as exc:
        raise VigilError(str(exc)) from None
    print(f"user {args.name!r} created ({args.role}"
          f"{', sites ' + ', '.join(args.site) if args.site else ', every site'})",
          file=sys.stderr)
    return 0


def _user_disable(args: argparse.Namespace) -> int:
    ok = _userstore().disable(args.name)
    print("disabled; sessions ended" if ok else "no such active user", file=sys.stderr)
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
    users = sub.add_parser("users", help="console users (people, with passwords)")
    users_sub = users.add_subparsers(dest="users_command", required=True)
    ucreate = users_sub.add_parser(
        "create", help="create a user; the password is prompted, or read from stdin")
    ucreate.add_argument("--role", required=True, choices=ROLES)
    ucreate.add_argument("--site", action="append",
                         help="limit the user to this site (repeatable); default all sites")
    ucreate.add_argument("name")
    ucreate.set_defaults(func=_user_create)
    udisable = users_sub.add_parser("disable", help="disable a user and end their sessions")
    udisable.add_argument("name")
    udisable.set_defaults(func=_user_disable)

    p = sub.add_parser("api", help="the read-model API")
    api_sub = p.add_subparsers(dest="api_command", required=True)
    serve = api_sub.add_parser("serve", help="run the API with uvicorn")
    serve.add_argument("--host", help="default VIGIL_API_HOST")
    serve.add_argument("--port", type=int, help="default VIGIL_API_PORT")
    serve.add_argument("--workers", type=int, help="default VIGIL_API_WORKERS (1)")
    serve.set_defaults(func=_serve)
    keys = api_sub.add_parser("keys", help="manage API keys")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it once")
    create.add_argument("--role", required=True, choices=ROLES)
    create.add_argument("--site", action="append",
                        help="limit the key to this site (repeatable); default all sites")
    create.add_argument("--name", help="shown as the operator on commands")
    create.add_argument("--expires-in", type=duration, metavar="DURATION",
                        help="the key stops working after this long (90d, 12h, ...)")
    create.set_defaults(func=_create)
    listing = keys_sub.add_parser("list", help="every key: id, role, sites, expiry")
    listing.set_defaults(func=_list)
    rotate = keys_sub.add_parser(
        "rotate", help="issue a successor (same name, role, sites); the old key expires")
    rotate.add_argument("key_id")
    rotate.add_argument("--grace", type=duration, default=timedelta(0), metavar="DURATION",
                        help="how long the old key keeps working (default: it stops now)")
    rotate.add_argument("--expires-in", type=duration, metavar="DURATION",
                        help="the new key's lifetime (default: the old key's)")
    rotate.set_defaults(func=_rotate)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_revoke)
