"""`vigil api serve` and `vigil api keys create|revoke`."""

from __future__ import annotations

import argparse
import sys

from api.auth import ROLES


def build_app():  # type: ignore[no-untyped-def]
    """The production wiring: real engine, producer, object store and Triton."""
    from minio import Minio

    from api.app import create_app
    from api.deps import make_engine
    from api.search import triton_embedder
    from api.settings import load_api_settings
    from schemas.producer import EventProducer
    from vigil.settings import get_settings

    settings = get_settings()
    api = load_api_settings()
    endpoint = settings.s3_endpoint
    secure = endpoint.startswith("https://")
    store = Minio(endpoint.split("://", 1)[-1], access_key=settings.s3_access_key,
                  secret_key=settings.s3_secret_key.get_secret_value(), secure=secure,
                  region=settings.s3_region)

    async def triton_probe() -> str | None:
        from tritonclient.grpc.aio import InferenceServerClient

        client = InferenceServerClient(settings.triton_url)
        try:
            ok = await client.is_model_ready(api.triton_model)
        finally:
            await client.close()
        if not ok:
            raise RuntimeError(f"model {api.triton_model} not ready")
        return "model ready"

    return create_app(
        settings, make_engine(settings.database_url, pool_size=api.db_pool_size),
        EventProducer(), api_settings=api,
        object_store=store, embed_image=triton_embedder(settings.triton_url, api.triton_model),
        triton_probe=triton_probe,
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


def _keystore():  # type: ignore[no-untyped-def]
    from api.auth import KeyStore
    from api.deps import make_engine
    from api.settings import load_api_settings
    from vigil.settings import get_settings

    api = load_api_settings()
    store = KeyStore(make_engine(get_settings().database_url, pool_size=1), api.keys_schema)
    store.ensure_schema()
    return store


def _create(args: argparse.Namespace) -> int:
    key_id, key = _keystore().create(args.name or f"{args.role}-key", args.role,
                                     args.site or None)
    print(f"key id: {key_id}", file=sys.stderr)
    print("store this key now; it is not kept and cannot be shown again:", file=sys.stderr)
    print(key)
    return 0


def _revoke(args: argparse.Namespace) -> int:
    ok = _keystore().revoke(args.key_id)
    print("revoked" if ok else "no such active key", file=sys.stderr)
    return 0 if ok else 1


def register(sub: argparse._SubParsersAction) -> None:
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
    create.set_defaults(func=_create)
    revoke = keys_sub.add_parser("revoke", help="revoke a key by its id")
    revoke.add_argument("key_id")
    revoke.set_defaults(func=_revoke)
