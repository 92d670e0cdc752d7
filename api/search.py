"""Appearance search: pgvector nearest neighbours (cosine) by detection id or by image.

Embeddings are personal data: they go into the query and never come out of the API;
results carry the detection, camera, time and distance only, and nothing older than
VIGIL_PROJECTOR_EMBEDDING_RETENTION_H is searched (retention drops whole days, so older
rows can still be on disk).

The table is partitioned by day with one HNSW graph per day (docs/architecture.md,
"Appearance embeddings"): the time window prunes the query to its days, and PostgreSQL
merges the per-day index scans (a Merge Append of HNSW scans, each in distance order) into
the global top k. ``hnsw.iterative_scan = strict_order`` keeps each day's scan going past
its first candidates when filters (cameras, the key's sites) reject them, in exact distance
order, which the merge needs. Searching from an uploaded
image runs it through Triton's ``appearance_embedder``; with Triton away the search
answers 503 rather than hanging or guessing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import BaseModel, Field
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response

from api.auth import principal_of
from api.common import check_range, json_response, site_filter
from api.deps import deps_of
from api.errors import ApiError
from api.routing import Endpoint
from schemas.tables import cameras, embeddings

log = logging.getLogger(__name__)


class SearchQuery(BaseModel):
    k: int = Field(10, ge=1, description="neighbours wanted; capped by the server")
    camera: list[str] | None = Field(None, description="repeatable")
    since: datetime | None = None
    until: datetime | None = None


class ByDetectionQuery(SearchQuery):
    detection_id: str = Field(..., min_length=1, max_length=200)


class Match(BaseModel):
    detection_id: str
    camera_id: str
    site_id: str | None
    occurred_at: datetime
    frame_sequence: int
    distance: float = Field(description="cosine distance, 0 = identical")


class SearchResult(BaseModel):
    model: str | None
    matches: list[Match]


_FROM = embeddings.outerjoin(cameras, cameras.c.camera_id == embeddings.c.camera_id)


def searchable_since(retention_h: float, since: datetime | None,
                     now: datetime | None = None) -> datetime:
    """The oldest time a search may reach: the window's start, never past retention."""
    oldest = (now or datetime.now(UTC)) - timedelta(hours=retention_h)
    return oldest if since is None or since < oldest else since


def neighbours_statement(vector: list[float], k: int, *, since: datetime,
                         until: datetime | None = None, camera: list[str] | None = None,
                         exclude: str | None = None,
                         sites: Collection[str] | None = None) -> sa.Select[Any]:
    """Top-k cosine neighbours of `vector` in [since, until) on cameras of `sites` (None:
    any); the API's statement, and the bench runs the very same one.

    The top k are taken from the embeddings alone, and only those k rows are joined to
    their cameras: with the join inside, the planner may hash-join the whole window and
    sort it (an exact scan of every vector) rather than merge the day graphs' ordered
    scans. The site restriction is therefore a camera-id filter on the scan itself, so
    each day's iterative scan goes on until it has k rows that pass."""
    distance = embeddings.c.embedding.cosine_distance(vector)
    nn = (sa.select(embeddings.c.detection_id, embeddings.c.camera_id,
                    embeddings.c.occurred_at, embeddings.c.frame_sequence,
                    distance.label("distance"))
          .where(embeddings.c.occurred_at >= since))
    if sites is not None:
        nn = nn.where(embeddings.c.camera_id.in_(
            sa.select(cameras.c.camera_id).where(cameras.c.site_id.in_(sorted(sites)))))
    if exclude:
        nn = nn.where(embeddings.c.detection_id != exclude)
    if camera:
        nn = nn.where(embeddings.c.camera_id.in_(camera))
    if until:
        nn = nn.where(embeddings.c.occurred_at < until)
    top = nn.order_by(distance).limit(k).subquery("nn")
    return (sa.select(top.c.detection_id, top.c.camera_id, cameras.c.site_id,
                      top.c.occurred_at, top.c.frame_sequence, top.c.distance)
            .select_from(top.outerjoin(cameras, cameras.c.camera_id == top.c.camera_id))
            .order_by(top.c.distance, top.c.detection_id))


def run_search(conn: sa.Connection, stmt: sa.Select[Any], k: int, ef: int
               ) -> list[sa.Row[Any]]:
    """Run a `neighbours_statement` with the HNSW scan settings it needs.

    Set for the session, not the transaction: the API's connections autocommit, so a
    transaction-local setting would be gone before the search runs. Every search sets
    both first, so a value left on a pooled connection never decides another search."""
    conn.execute(sa.text("SELECT set_config('hnsw.ef_search', :ef, false), "
                         "set_config('hnsw.iterative_scan', 'strict_order', false)"),
                 {"ef": str(max(ef, k))})
    return list(conn.execute(stmt).all())


async def _neighbours(request: Request, query: SearchQuery, vector: list[float],
                      exclude: str | None) -> list[Match]:
    principal = principal_of(request)
    deps = deps_of(request)
    k = min(query.k, deps.api.max_k)
    stmt = neighbours_statement(
        vector, k, since=searchable_since(deps.embedding_retention_h, query.since),
        until=query.until, camera=query.camera, exclude=exclude, sites=principal.sites)
    rows = await deps.read(lambda conn: run_search(conn, stmt, k, deps.api.search_ef))
    return [Match.model_validate(r._mapping) for r in rows]


async def search_by_detection(request: Request, query: ByDetectionQuery) -> Response:
    check_range(query.since, query.until)
    principal = principal_of(request)
    oldest = searchable_since(deps_of(request).embedding_retention_h, None)
    stmt = (sa.select(embeddings.c.embedding, embeddings.c.model).select_from(_FROM)
            .where(embeddings.c.detection_id == query.detection_id,
                   embeddings.c.occurred_at >= oldest,
                   site_filter(principal, cameras.c.site_id)))
    row = await deps_of(request).read(lambda conn: conn.execute(stmt).first())
    if row is None:
        raise ApiError(404, "no embedding for this detection (unknown, erased or expired)",
                       details={"detection_id": query.detection_id})
    vector = [float(x) for x in row.embedding]
    matches = await _neighbours(request, query, vector, exclude=query.detection_id)
    return json_response(SearchResult(model=row.model, matches=matches))


async def search_by_image(request: Request, query: SearchQuery) -> Response:
    check_range(query.since, query.until)
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise ApiError(415, "upload the image as multipart/form-data field 'image'")
    try:
        form = await request.form(max_files=1, max_fields=5)
    except Exception as exc:  # malformed multipart is the client's problem
        raise ApiError(
            400, "malformed multipart body", details={"reason": str(exc)[:200]}
        ) from None
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise ApiError(422, "field 'image' (a file) is required")
    data = await image.read()
    await form.close()
    if not data:
        raise ApiError(422, "the image is empty")
    embed = deps_of(request).embed_image
    if embed is None:
        raise ApiError(503, "image search needs Triton, which is not configured",
                       details={"dependency": "triton"})
    vector = await embed(data)
    matches = await _neighbours(request, query, vector, exclude=None)
    return json_response(SearchResult(model=deps_of(request).api.triton_model, matches=matches))


def triton_embedder(url: str, model: str, timeout_s: float = 5.0
                    ) -> Callable[[bytes], Awaitable[list[float]]]:
    """An `embed_image` for create_app: decode, resize to the model's input, infer.

    Undecodable images are a 422; Triton unreachable or failing is a 503.
    """
    state: dict[str, Any] = {}

    async def embed(data: bytes) -> list[float]:
        import cv2
        import numpy as np

        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        if img is None:
            raise ApiError(422, "the upload is not a decodable image")
        try:
            from tritonclient.grpc import InferInput
            from tritonclient.grpc.aio import InferenceServerClient

            if "client" not in state:
                state["client"] = InferenceServerClient(url)
            client = state["client"]
            if "meta" not in state:
                state["meta"] = await client.get_model_metadata(model, as_json=True)
            meta = state["meta"]
            inp, out = meta["inputs"][0], meta["outputs"][0]
            shape = [int(d) for d in inp["shape"]]
            dims = shape[1:] if len(shape) == 4 else shape
            h, w = (dims[0], dims[1]) if dims[-1] == 3 else (dims[1], dims[2])
            if h > 0 and w > 0:
                img = cv2.resize(img, (w, h))
            arr = img[None, ...] if len(shape) == 4 else img
            dtype = inp["datatype"]
            arr = arr.astype(np.float32) / 255.0 if dtype == "FP32" else arr.astype(np.uint8)
            tensor = InferInput(inp["name"], list(arr.shape), dtype)
            tensor.set_data_from_numpy(arr)
            result = await client.infer(model, [tensor], client_timeout=timeout_s)
            vec = result.as_numpy(out["name"]).reshape(-1)
            return [float(x) for x in vec]
        except ApiError:
            raise
        except Exception as exc:
            state.pop("client", None)
            state.pop("meta", None)
            log.warning("triton embed failed", extra={"reason": str(exc)[:300]})
            raise ApiError(503, "the appearance embedder (Triton) is unavailable",
                           details={"dependency": "triton"}) from None

    return embed


ROUTES = [
    Endpoint("GET", "/api/v1/search/appearance", search_by_detection,
             "People who look like a detection (nearest appearance embeddings)",
             query=ByDetectionQuery, responses={200: SearchResult}, tag="search",
             errors=(404,), personal_data=True),
    Endpoint("POST", "/api/v1/search/appearance", search_by_image,
             "People who look like an uploaded image (needs Triton; 503 without)",
             query=SearchQuery, multipart=True, responses={200: SearchResult, 503: None},
             tag="search", personal_data=True),
]
