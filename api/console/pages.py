"""Console routes: login and logout, and one route per page.

Why server shells plus a small script: each page is rendered by the server with its first
data already embedded (the same query and the same JSON the API answers, so "one query,
two renderings" and identical site scoping), which makes the first paint one round trip
and needs no build step; a plain ES module (`static/console.js`) then keeps the page live
over the API's SSE stream and sends actions to the JSON API with the session's CSRF token.
No asset comes from anywhere but this process.

Access: an unauthenticated page request is sent to the login page; a page about
something the user may not see answers the same 404 page as a missing id.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from api.errors import ApiError
from api.routing import SESSION_COOKIE, Endpoint, authenticate_session
from api.users import csrf_matches

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
#: A pre-session CSRF cookie for the login form (double submit): a page of another
#: origin cannot read it, so it cannot log a victim in to the attacker's account.
LOGIN_CSRF_COOKIE = "vigil_login_csrf"
QUEUE_PAGE_SIZE = 200


def _secure(request: Request) -> bool:
    forced = request.app.state.deps.api.cookie_secure
    return bool(forced) if forced is not None else request.url.scheme == "https"


def _safe_next(target: str | None) -> str:
    """Only a path on this site: never an absolute URL (open redirect)."""
    if target and target.startswith("/console") and not target.startswith("//") \
            and "\\" not in target:
        return target
    return "/console/"


def recorded(method: str, path: str, summary: str
             ) -> Callable[[Callable[[Request], Awaitable[Response]]],
                           Callable[[Request], Awaitable[Response]]]:
    """Put every call of a console route on the access record (api/access.py), like the
    JSON API's personal-data routes: logins (failed ones too), logouts, and the pages and
    pictures that show evidence or camera frames."""

    def wrap(handler: Callable[[Request], Awaitable[Response]]
             ) -> Callable[[Request], Awaitable[Response]]:
        ep = Endpoint(method, path, handler, summary, permission=None)

        @functools.wraps(handler)
        async def run(request: Request) -> Response:
            recorder = request.app.state.deps.extra.get("access")
            try:
                response = await handler(request)
            except Exception:
                if recorder is not None:
                    recorder.record(request, ep, 500)
                raise
            if recorder is not None:
                recorder.record(request, ep, response.status_code)
            return response

        return run

    return wrap


def _page(request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
    session = request.scope.get("session")
    principal = request.scope.get("principal")
    return templates.TemplateResponse(
        request, name, {"principal": principal,
                        "csrf_token": session.csrf_token if session else "", **context},
        status_code=status,
        headers={"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                 "Content-Security-Policy": "default-src 'self'; img-src 'self' data: http: "
                 "https:; media-src 'self' http: https: blob:; style-src 'self'; "
                 "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
                 "Referrer-Policy": "same-origin"})


async def _user(request: Request, permission: str = "read") -> Response | None:
    """Authenticate a page request; a redirect to the login page when there is none."""
    if not request.cookies.get(SESSION_COOKIE):
        return _to_login(request)
    try:
        await authenticate_session(request, permission)
    except ApiError as exc:
        if exc.status == 401:
            return _to_login(request)
        if exc.status == 403 and exc.error == "csrf_failed":
            return _page(request, "error.html", 403, title="Request refused",
                         message="This form was not sent from a current Vigil page "
                                 "(its security token is missing or stale). Reload the "
                                 "page and try again.")
        if exc.status == 403:
            return _page(request, "error.html", 403, title="Not allowed",
                         message=exc.message)
        raise
    return None


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/console/login?next={quote(target)}", status_code=303)


async def _api_json(handler: Any, request: Request, *args: Any) -> Any:
    """Call a JSON API handler in-process and decode its body (one query, two renderings)."""
    response = await handler(request, *args)
    return json.loads(bytes(response.body))


# ----------------------------------------------------------------------------- login
async def login_page(request: Request) -> Response:
    import secrets

    token = request.cookies.get(LOGIN_CSRF_COOKIE) or secrets.token_urlsafe(24)
    response = _page(request, "login.html", login_csrf=token,
                     next=_safe_next(request.query_params.get("next")), failed=False)
    response.set_cookie(LOGIN_CSRF_COOKIE, token, httponly=True, samesite="strict",
                        secure=_secure(request), path="/console/login")
    return response


@recorded("POST", "/console/login", "Console login")
async def login_submit(request: Request) -> Response:
    deps = request.app.state.deps
    address = request.client.host if request.client else "unknown"
    wait = deps.anon_limiter.waiting(address)
    if wait > 0:
        return _page(request, "error.html", 429, title="Too many attempts",
                     message=f"Too many login attempts from this address; wait "
                             f"{max(1, round(wait))} s and try again.")
    form = await request.form()
    username = str(form.get("username") or "")[:200]
    password = str(form.get("password") or "")[:1000]
    target = _safe_next(str(form.get("next") or ""))
    cookie_token = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not cookie_token or not csrf_matches(cookie_token, str(form.get("csrf") or "")):
        return _page(request, "error.html", 403, title="Request refused",
                     message="The login form was not sent from this site's login page "
                             "(its security token is missing or stale). Reload the login "
                             "page and try again.")
    result = await anyio.to_thread.run_sync(deps.users.login, username, password)
    if result.token is None:
        deps.anon_limiter.take(address)
        if result.delay_s:
            await asyncio.sleep(result.delay_s)
        log.info("console login failed", extra={"client": address})
        return _page(request, "login.html", 401, login_csrf=cookie_token, next=target,
                     failed=True)
    log.info("console login", extra={"user": username, "client": address})
    session = await anyio.to_thread.run_sync(deps.users.session, result.token)
    if session is not None:  # the access record names who logged in
        request.scope["principal"] = session.principal
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(SESSION_COOKIE, result.token, httponly=True, samesite="lax",
                        secure=_secure(request), path="/",
                        max_age=int(deps.users.session_ttl.total_seconds()))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/console/login")
    return response


@recorded("POST", "/console/logout", "Console logout")
async def logout(request: Request) -> Response:
    deps = request.app.state.deps
    token = request.cookies.get(SESSION_COOKIE, "")
    session = await anyio.to_thread.run_sync(deps.users.session, token) if token else None
    if session is not None:
        form = await request.form()
        if not csrf_matches(session.csrf_token, str(form.get("csrf") or "")):
            return _page(request, "error.html", 403, title="Request refused",
                         message="The logout form was not sent from a current Vigil page "
                                 "(its security token is missing or stale). Reload the "
                                 "page and try again.")
        request.scope["principal"] = session.principal
        await anyio.to_thread.run_sync(deps.users.logout, token)
    response = RedirectResponse("/console/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ----------------------------------------------------------------------------- pages
async def queue_page(request: Request) -> Response:
    """The alert queue: the newest alerts the user may see, then live over SSE."""
    if (redirect := await _user(request)) is not None:
        return redirect
    from api.alerts import AlertQuery, list_alerts

    page = await _api_json(list_alerts, request, AlertQuery(limit=QUEUE_PAGE_SIZE))
    return _page(request, "queue.html", initial=page, page_name="queue")


async def _detail_page(request: Request, handler: Any, template: str, name: str,
                       what: str) -> Response:
    """One resource's page from its JSON handler; another site's id answers the same 404
    page as one that does not exist."""
    if (redirect := await _user(request)) is not None:
        return redirect
    try:
        data = await _api_json(handler, request)
    except ApiError as exc:
        if exc.status in (400, 404):
            return _page(request, "error.html", 404, title="Not found",
                         message=f"There is no {what} with this id, or it is not yours "
                                 "to see.")
        raise
    return _page(request, template, page_name=name, **{name: data})


async def _picture(request: Request, handler: Any,
                   pick: Callable[[dict[str, Any]], str | None], max_age: int) -> Response:
    """A redirect to a presigned picture URL taken from a JSON handler's answer, after
    that handler's site check (its 404 and a missing picture answer alike)."""
    if not request.cookies.get(SESSION_COOKIE):
        return Response(status_code=401)
    try:
        await authenticate_session(request, "read")
        data = await _api_json(handler, request)
    except ApiError as exc:
        return Response(status_code=exc.status if exc.status in (401, 403, 429) else 404)
    url = pick(data)
    if not url:
        return Response(status_code=404, headers={"Cache-Control": "private, max-age=10"})
    return RedirectResponse(url, status_code=303,
                            headers={"Cache-Control": f"private, max-age={max_age}"
                                     if max_age else "no-store"})


def _newest_thumbnail(alert: dict[str, Any]) -> str | None:
    for item in reversed(alert.get("evidence") or []):
        url = item.get("thumbnail_url") or item.get("annotated_url")
        if url:
            return str(url)
    return None


@recorded("GET", "/console/alerts/{alert_id}", "Console: an alert with its evidence")
async def alert_page(request: Request) -> Response:
    from api.alerts import get_alert

    return await _detail_page(request, get_alert, "alert.html", "alert", "alert")


@recorded("GET", "/console/alerts/{alert_id}/thumbnail", "Console: an alert's thumbnail")
async def alert_thumbnail(request: Request) -> Response:
    """The queue's picture of an alert: its newest evidence's thumbnail."""
    from api.alerts import get_alert

    return await _picture(request, get_alert, _newest_thumbnail, max_age=60)


async def _status_page(request: Request, template: str, name: str,
                       system: bool = False) -> Response:
    """Cameras and their edges as the user may see them (the wall and the System page;
    the latter also embeds `GET /api/v1/system`)."""
    if (redirect := await _user(request)) is not None:
        return redirect
    from api.cameras import CameraQuery, list_cameras, list_sites

    page = await _api_json(list_cameras, request, CameraQuery(limit=500))
    sites = await _api_json(list_sites, request)
    initial: dict[str, Any] = {"cameras": page, "sites": sites}
    if system:
        from api.system import SystemQuery, system_status

        initial["system"] = await _api_json(system_status, request, SystemQuery())
    return _page(request, template, initial=initial, page_name=name)


async def cameras_page(request: Request) -> Response:
    """The camera wall: every camera the user may see, with its status."""
    return await _status_page(request, "cameras.html", "cameras")


@recorded("GET", "/console/cameras/{camera_id}", "Console: a camera")
async def camera_page(request: Request) -> Response:
    from api.cameras import get_camera

    return await _detail_page(request, get_camera, "camera.html", "camera", "camera")


@recorded("GET", "/console/cameras/{camera_id}/frame", "Console: a camera's latest frame")
async def camera_frame(request: Request) -> Response:
    """A camera's latest stored frame."""
    from api.cameras import get_camera

    return await _picture(request, get_camera,
                          lambda c: (c.get("last_frame") or {}).get("url"), max_age=0)


async def system_page(request: Request) -> Response:
    """Edges and cameras as the on-call operator checks them."""
    return await _status_page(request, "system.html", "system", system=True)


async def explore_page(request: Request) -> Response:
    """Scene events and alerts by camera, zone, rule and time, and "find similar" from a
    person's thumbnail (the appearance-search API, so its site scoping applies)."""
    if (redirect := await _user(request)) is not None:
        return redirect
    from api.cameras import CameraQuery, list_cameras
    from api.config_routes import ConfigQuery, list_rules, list_zones

    initial = {"cameras": await _api_json(list_cameras, request, CameraQuery(limit=500)),
               "zones": await _api_json(list_zones, request, ConfigQuery()),
               "rules": await _api_json(list_rules, request, ConfigQuery())}
    return _page(request, "explore.html", initial=initial, page_name="explore")


#: the crop around a detection's box, as a share of the box's size on each side
THUMB_MARGIN = 0.25
THUMB_HEIGHT = 160


@recorded("GET", "/console/detections/{detection_id}/thumbnail",
          "Console: a detection's thumbnail (its box cropped from the stored frame)")
async def detection_thumbnail(request: Request) -> Response:
    """A person's picture for Explore: the stored frame cropped to the box (with a
    margin), after the same site check as the detections listing. The whole frame never
    goes out through this route; unknown, erased, another site's and never-stored
    frames all answer 404 alike."""
    if not request.cookies.get(SESSION_COOKIE):
        return Response(status_code=401)
    try:
        await authenticate_session(request, "read")
        from api.detections import detection_frame

        row = await detection_frame(request, request.scope["principal"],
                                    request.path_params["detection_id"])
    except ApiError as exc:
        return Response(status_code=exc.status if exc.status in (401, 403, 429) else 404)
    deps = request.app.state.deps
    if row is None or not row.object_ref or deps.object_store is None:
        return Response(status_code=404, headers={"Cache-Control": "private, max-age=10"})
    jpeg = await anyio.to_thread.run_sync(_crop, deps, row)
    if jpeg is None:
        return Response(status_code=404, headers={"Cache-Control": "private, max-age=10"})
    return Response(jpeg, media_type="image/jpeg",
                    headers={"Cache-Control": "private, max-age=300"})


def _crop(deps: Any, row: Any) -> bytes | None:
    import cv2
    import numpy as np

    from vigil.objects import get_bytes, split_ref

    bucket, key = split_ref(row.object_ref, deps.settings.bucket_frames, deps.settings.buckets)
    try:
        data = get_bytes(bucket, key, deps.object_store)
    except Exception as exc:  # gone from the store (retention) or the store is away
        log.info("detection frame unavailable", extra={"reason": str(exc)[:200]})
        return None
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None
    h, w = img.shape[:2]
    bw, bh = row.x2 - row.x1, row.y2 - row.y1
    x1 = int(max(0.0, row.x1 - bw * THUMB_MARGIN) * w)
    x2 = int(min(1.0, row.x2 + bw * THUMB_MARGIN) * w)
    y1 = int(max(0.0, row.y1 - bh * THUMB_MARGIN) * h)
    y2 = int(min(1.0, row.y2 + bh * THUMB_MARGIN) * h)
    if x2 - x1 < 2 or y2 - y1 < 2:
        return None
    crop = img[y1:y2, x1:x2]
    scale = THUMB_HEIGHT / crop.shape[0]
    crop = cv2.resize(crop, (max(1, int(crop.shape[1] * scale)), THUMB_HEIGHT))
    ok, buf = cv2.imencode(".jpg", crop, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return bytes(buf) if ok else None


async def not_found(request: Request) -> Response:
    if (redirect := await _user(request)) is not None:
        return redirect
    return _page(request, "error.html", 404, title="Not found",
                 message="There is no such page.")


async def root(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


def is_console_route(route: BaseRoute) -> bool:
    """True for the console's own routes (HTML pages, static files, login)."""
    path = getattr(route, "path", "")
    return path == "/" or path.startswith("/console")


def routes() -> list[BaseRoute]:
    """The console's routes, mounted by `api.app.create_app` (not in the OpenAPI
    document: that describes the JSON API, which the console itself uses)."""
    return [
        Route("/", root, methods=["GET"]),
        Route("/console", root, methods=["GET"]),
        Route("/console/login", login_page, methods=["GET"]),
        Route("/console/login", login_submit, methods=["POST"]),
        Route("/console/logout", logout, methods=["POST"]),
        Route("/console/", queue_page, methods=["GET"]),
        Route("/console/alerts/{alert_id}", alert_page, methods=["GET"]),
        Route("/console/alerts/{alert_id}/thumbnail", alert_thumbnail, methods=["GET"]),
        Route("/console/cameras", cameras_page, methods=["GET"]),
        Route("/console/cameras/{camera_id}", camera_page, methods=["GET"]),
        Route("/console/cameras/{camera_id}/frame", camera_frame, methods=["GET"]),
        Route("/console/system", system_page, methods=["GET"]),
        Route("/console/explore", explore_page, methods=["GET"]),
        Route("/console/detections/{detection_id}/thumbnail", detection_thumbnail,
              methods=["GET"]),
        Mount("/console/static", app=StaticFiles(directory=str(HERE / "static")),
              name="console-static"),
        Route("/console/{rest:path}", not_found, methods=["GET"]),
    ]
