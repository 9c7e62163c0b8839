"""The gateway's web view at /ui: server-rendered HTML, a little JavaScript, no build step
and nothing fetched from elsewhere at run time. It reads; the one thing it changes is the
sump, with a redrive button.

    GET  /ui                  recent tasks (id, route, status, progress, updated), filtered by
                              ?status= and ?q= (text in the id); the page's script polls
                              GET /v1/tasks with the same filter
    GET  /ui/tasks/{id}       one task: status, route (done / current / next), result or
                              error, and a live event log fed by GET /v1/tasks/{id}/events
    GET  /ui/sump             what x-sump kept (id, actor, reason, attempt, failed at, error),
                              filtered by ?actor=, ?reason=, ?since=; the script polls
                              GET /v1/sump, and each row's Redrive button posts to
                              /v1/sump/{id}/redrive and shows the outcome in the row
    GET  /ui/login            the API key form (only when keys are configured)
    POST /ui/login            checks the key, keeps it in a cookie, back to the page asked for
    POST /ui/logout           forgets the cookie
    GET  /ui/static/{name}    the page's script and style sheet (ui_static/)

How a browser presents the key: a page load cannot carry an Authorization header, and
neither can EventSource, so the key given once to /ui/login is kept in an HttpOnly,
SameSite=Strict cookie (the page's script never sees it, and no other site's page can send
it). `KeyCookie` lets that cookie stand in for the header on reads (GET and HEAD of
/v1/tasks..., /v1/sump... and /ui...), and on one write: POST /v1/sump/{id}/redrive, and only
when the request's Origin is this gateway (the page's own fetch). A cookie never authorizes
a submit, cancel or resume, nor a redrive sent from another site's page. auth.py still
decides every request, from the header it gets. With no keys configured the view is open,
like the API.

Everything a task holds (payload, result, error text) is shown escaped: html.escape here,
textContent in the script, and a Content-Security-Policy that runs no inline script.
"""

from __future__ import annotations

import html
import json
import re
import urllib.parse
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request, cookie_parser
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from asya_gateway.errors import ApiError
from asya_gateway.service import Gateway
from asya_gateway.sump import NOT_CONFIGURED, Sump, filters_from
from asya_gateway.tasks import TERMINAL, TaskStatus
from asya_shared import redrive, stores

__all__ = [
    "COOKIE",
    "LIST_LIMIT",
    "KeyCookie",
    "Step",
    "cookie_may_authorize",
    "install",
    "matching",
    "origin_is",
    "route_steps",
    "routes",
    "safe_next",
]

COOKIE = "asya_key"
# The newest tasks the list shows (and its text filter searches).
LIST_LIMIT = 200
# Longer than any key anyone would paste; a bigger login body is refused unread.
MAX_LOGIN_BODY = 4096
# What the id filter may hold: it is matched as plain text, never as a pattern.
MAX_QUERY = 200
# The pages of the view, in the order of the navigation bar.
NAV: tuple[tuple[str, str], ...] = (("/ui", "Tasks"), ("/ui/sump", "Sump"))

_STATIC = {
    "ui.js": "text/javascript; charset=utf-8",
    "ui.css": "text/css; charset=utf-8",
}
_SECURITY_HEADERS = {
    # No inline script or style: a task's text that slipped into the page could not run.
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    # Not no-referrer: Chromium then sends `Origin: null` with the login form, which
    # _same_origin must refuse. Task ids still never leave for another site.
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}
_SAFE_METHODS = frozenset({"GET", "HEAD"})
# The one write a cookie may authorize, and only from this gateway's own pages.
_REDRIVE_PATH = re.compile(r"^/v1/sump/.+/redrive$")
_STATUSES = tuple(str(status) for status in TaskStatus)


def install(app: Starlette, gateway: Gateway, sump: Sump | None = None) -> None:
    """Add the web view to the public app: its routes, and the cookie that carries the key.
    Without `sump` the sump page says that no sump store is configured."""
    app.router.routes.extend(routes(gateway, sump))
    app.add_middleware(KeyCookie)


def routes(gateway: Gateway, sump: Sump | None = None) -> list[BaseRoute]:
    pages = _Pages(gateway, sump or Sump(gateway, None))
    return [
        Route("/ui", pages.tasks, methods=["GET"]),
        Route("/ui/tasks/{task_id}", pages.task, methods=["GET"]),
        Route("/ui/sump", pages.sump, methods=["GET"]),
        Route("/ui/login", pages.login_form, methods=["GET"]),
        Route("/ui/login", pages.login, methods=["POST"]),
        Route("/ui/logout", pages.logout, methods=["POST"]),
        Route("/ui/static/{name}", _static, methods=["GET"]),
    ]


# ------------------------------------------------------------------------ the key cookie


def cookie_may_authorize(method: str, path: str, *, same_origin: bool = False) -> bool:
    """Whether the key cookie may stand in for the Authorization header: on reads of the
    tasks and sump API and of the view, and on a redrive sent by this gateway's own page
    (`same_origin`); never on anything that changes a task."""
    if method == "POST" and _REDRIVE_PATH.match(path):
        return same_origin
    if method not in _SAFE_METHODS:
        return False
    return path in ("/v1/tasks", "/v1/sump", "/ui") or path.startswith(
        ("/v1/tasks/", "/v1/sump/", "/ui/")
    )


def origin_is(origin: str | None, host: str | None) -> bool:
    """Whether a request's Origin names the host it was sent to: a page of this gateway.
    No Origin is no proof (every browser sends one with a fetch POST)."""
    if not origin or not host:
        return False
    return origin in (f"http://{host}", f"https://{host}")


class KeyCookie:
    """Turns the view's key cookie into `Authorization: Bearer <key>` where
    `cookie_may_authorize` allows it and no header was sent (a header always wins)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and cookie_may_authorize(
            scope["method"], scope["path"], same_origin=_same_origin_scope(scope)
        ):
            headers: list[tuple[bytes, bytes]] = list(scope["headers"])
            key = _cookie_key(headers)
            if key is not None and not any(name == b"authorization" for name, _ in headers):
                headers.append((b"authorization", b"Bearer " + key.encode("ascii")))
                scope = {**scope, "headers": headers}
        await self.app(scope, receive, send)


def _same_origin_scope(scope: Scope) -> bool:
    found = {name: value.decode("latin-1") for name, value in scope["headers"]
             if name in (b"origin", b"host")}  # fmt: skip
    return origin_is(found.get(b"origin"), found.get(b"host"))


def _cookie_key(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"cookie":
            raw = cookie_parser(value.decode("latin-1")).get(COOKIE)
            if raw:
                key = urllib.parse.unquote(raw)
                return key if _usable_key(key) else None
    return None


def _usable_key(key: str) -> bool:
    """A key an Authorization header can carry: visible ASCII, no spaces."""
    return bool(key) and all(33 <= ord(char) <= 126 for char in key)


def safe_next(target: str | None) -> str:
    """Where to go after logging in: a page of the view, never another site (`//host`,
    `/\\host` and absolute URLs are refused for /ui)."""
    if not target or not (target == "/ui" or target.startswith(("/ui/", "/ui?"))):
        return "/ui"
    if "\\" in target or any(ord(char) < 32 for char in target):
        return "/ui"
    return target


# ---------------------------------------------------------------------------- the pages


class _Pages:
    def __init__(self, gateway: Gateway, sump: Sump) -> None:
        self.gw = gateway
        self.sump_view = sump

    def _tenant(self, request: Request) -> str | None:
        """The caller's tenant; None when the key is missing or wrong (go and log in)."""
        try:
            return self.gw.tenant_of(request.headers.get("authorization"))
        except ApiError as exc:
            if exc.status == 401:
                return None
            raise

    async def tasks(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant is None:
            return _to_login(request)
        status_text = request.query_params.get("status") or ""
        query = request.query_params.get("q") or ""
        problem = _filter_problem(status_text, query)
        if problem:
            return _page("Tasks", _error_body(problem, "/ui", "all tasks"), status=400)
        status = TaskStatus(status_text) if status_text else None
        page = await self.gw.store.list_tasks(tenant, status=status, limit=LIST_LIMIT, cursor=None)
        shown = matching([task.to_json() for task in page.tasks], query)
        body = _tasks_body(shown, status_text, query, auth=self.gw.keys is not None)
        return _page("Tasks", body, page="tasks")

    async def task(self, request: Request) -> Response:
        tenant = self._tenant(request)
        if tenant is None:
            return _to_login(request)
        task_id = request.path_params["task_id"]
        try:
            task = await self.gw.get(task_id, tenant)
        except ApiError as exc:
            if exc.status != 404:
                raise
            message = f"There is no task {task_id!r} (for this key)."
            return _page("No such task", _error_body(message, "/ui", "all tasks"), status=404)
        body = _task_body(task.to_json(), auth=self.gw.keys is not None)
        return _page(f"Task {task.id}", body, page="task")

    async def sump(self, request: Request) -> Response:
        if self._tenant(request) is None:
            return _to_login(request)
        auth = self.gw.keys is not None
        if not self.sump_view.configured:
            return _page("Sump", _sump_body(None, {}, auth=auth, problem=NOT_CONFIGURED),
                         page="message")  # fmt: skip
        shown = {name: request.query_params.get(name) or "" for name in _SUMP_FILTERS}
        try:
            filters = filters_from(request.query_params, now=self.gw.clock())
        except ValueError as exc:
            return _page("Sump", _error_body(str(exc), "/ui/sump", "the whole sump"), status=400)
        try:
            rows = await self.sump_view.summaries(filters)
        except stores.StoreError as exc:
            problem = f"The sump store cannot answer now ({exc}); reload to try again."
            return _page("Sump", _error_body(problem, "/ui/sump", "the whole sump"), status=503)
        return _page("Sump", _sump_body(rows, shown, auth=auth, problem=None), page="sump")

    async def login_form(self, request: Request) -> Response:
        if self.gw.keys is None:
            return RedirectResponse("/ui", status_code=303)
        return _login_page(safe_next(request.query_params.get("next")), problem=None)

    async def login(self, request: Request) -> Response:
        if self.gw.keys is None:
            return RedirectResponse("/ui", status_code=303)
        if not _same_origin(request):
            return _login_page("/ui", "This form was sent from another site.", status=403)
        raw = await _bounded_body(request)
        if raw is None:
            return _login_page("/ui", "The form was too large to be a key.", status=413)
        fields = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
        key = (fields.get("key") or [""])[0].strip()
        target = safe_next((fields.get("next") or [""])[0])
        if not _usable_key(key) or self.gw.keys.tenant_of(key) is None:
            return _login_page(target, "That API key is not valid; check it.", status=401)
        response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE,
            urllib.parse.quote(key, safe=""),
            path="/",
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/ui/login" if self.gw.keys else "/ui", status_code=303)
        response.delete_cookie(
            COOKIE, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https"
        )
        return response


async def _static(request: Request) -> Response:
    name = request.path_params["name"]
    media_type = _STATIC.get(name)
    if media_type is None:
        return Response("not found", status_code=404, media_type="text/plain")
    text = resources.files("asya_gateway").joinpath("ui_static", name).read_text("utf-8")
    return Response(
        text,
        media_type=media_type,
        headers={"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"},
    )


def _to_login(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(
        "/ui/login?" + urllib.parse.urlencode({"next": target}), status_code=303
    )


def _same_origin(request: Request) -> bool:
    """A form post that says where it comes from must come from this gateway's pages."""
    origin = request.headers.get("origin")
    return origin is None or origin_is(origin, request.headers.get("host"))


async def _bounded_body(request: Request) -> bytes | None:
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_BODY:
            return None
    return body


# ------------------------------------------------------------------ decisions, no I/O


def _filter_problem(status: str, query: str) -> str | None:
    if status and status not in _STATUSES:
        return f"Status {status!r} is not a task status; pick one of {', '.join(_STATUSES)}."
    if len(query) > MAX_QUERY:
        return f"The id filter is {len(query)} characters long; at most {MAX_QUERY} are searched."
    return None


def matching(tasks: Sequence[Mapping[str, Any]], query: str) -> list[Mapping[str, Any]]:
    """The tasks whose id holds `query` (plain text, any case); all of them for none."""
    needle = query.strip().lower()
    return [task for task in tasks if needle in str(task["id"]).lower()]


@dataclass(frozen=True)
class Step:
    actor: str
    state: str  # "done", "current" or "next"


def route_steps(route: Mapping[str, Any], status: str) -> list[Step]:
    """The route as steps: route.prev done, route.curr current (done too once the task
    succeeded: x-sink has recorded it), route.next still to come."""
    curr_state = "done" if status == TaskStatus.SUCCEEDED else "current"
    return [
        *(Step(str(actor), "done") for actor in route.get("prev", [])),
        *([Step(str(route["curr"]), curr_state)] if route.get("curr") else []),
        *(Step(str(actor), "next") for actor in route.get("next", [])),
    ]


def _route_text(route: Mapping[str, Any]) -> str:
    actors = [*route.get("prev", []), *([route["curr"]] if route.get("curr") else [])]
    return " → ".join(str(actor) for actor in [*actors, *route.get("next", [])])


def _percent(progress: Any) -> str:
    return f"{round(float(progress or 0) * 100)}%"


def _json_text(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True)


# ------------------------------------------------------------------------------- markup

_e = html.escape  # quote=True: safe in text and in double-quoted attributes


def _page(title: str, body: str, *, page: str = "message", status: int = 200) -> HTMLResponse:
    nav = "".join(f'<a href="{_e(href)}">{_e(label)}</a>' for href, label in NAV)
    document = (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_e(title)} · Asya</title>"
        '<link rel="stylesheet" href="/ui/static/ui.css">'
        '<script src="/ui/static/ui.js" defer></script>'
        f'</head><body data-page="{_e(page)}">'
        f"<header><strong>Asya</strong><nav>{nav}</nav></header>"
        f"<main>{body}</main></body></html>\n"
    )
    return HTMLResponse(document, status_code=status, headers=_SECURITY_HEADERS)


def _logout_form(auth: bool) -> str:
    if not auth:
        return ""
    return (
        '<form method="post" action="/ui/logout" class="logout">'
        '<button type="submit">Log out</button></form>'
    )


def _error_body(message: str, back: str, back_label: str) -> str:
    return (
        f'<p class="problem" id="problem">{_e(message)}</p>'
        f'<p><a href="{_e(back)}">Back to {_e(back_label)}</a></p>'
    )


def _tasks_body(tasks: Sequence[Mapping[str, Any]], status: str, query: str, *, auth: bool) -> str:
    options = "".join(
        f'<option value="{_e(value)}"{" selected" if value == status else ""}>'
        f"{_e(value or 'any status')}</option>"
        for value in ("", *_STATUSES)
    )
    rows = "".join(_task_row(task) for task in tasks)
    return (
        f"{_logout_form(auth)}<h1>Tasks</h1>"
        '<form id="filters" method="get" action="/ui">'
        f'<label>Status <select name="status" id="status-filter">{options}</select></label> '
        '<label>Id contains <input type="search" name="q" id="id-filter" '
        f'value="{_e(query)}" maxlength="{MAX_QUERY}"></label> '
        '<button type="submit">Filter</button>'
        '<span id="refreshed" class="muted"></span></form>'
        f'<table id="tasks" data-limit="{LIST_LIMIT}"><thead><tr><th>Id</th><th>Route</th>'
        "<th>Status</th><th>Progress</th><th>Updated</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
        f'<p id="empty" class="muted"{"" if not tasks else " hidden"}>No tasks match.</p>'
    )


def _task_row(task: Mapping[str, Any]) -> str:
    task_id = str(task["id"])
    href = "/ui/tasks/" + urllib.parse.quote(task_id, safe="")
    status = str(task["status"])
    return (
        f'<tr data-id="{_e(task_id)}" data-status="{_e(status)}">'
        f'<td class="id"><a href="{_e(href)}">{_e(task_id)}</a></td>'
        f'<td class="route">{_e(_route_text(task["route"]))}</td>'
        f'<td class="status"><span class="badge {_e(status)}">{_e(status)}</span></td>'
        f'<td class="progress">{_e(_percent(task["progress"]))}</td>'
        f'<td class="updated">{_e(str(task["updated_at"]))}</td></tr>'
    )


def _task_body(task: Mapping[str, Any], *, auth: bool) -> str:
    status = str(task["status"])
    steps = "".join(
        f'<li class="{_e(step.state)}" data-state="{_e(step.state)}">{_e(step.actor)}</li>'
        for step in route_steps(task["route"], status)
    )
    facts = "".join(
        f'<dt>{_e(label)}</dt><dd id="{_e(field)}">{_e(str(value))}</dd>'
        for label, field, value in (
            ("Actor", "actor", task.get("actor") or "—"),
            ("Progress", "progress", _percent(task["progress"])),
            ("Created", "created", task["created_at"]),
            ("Updated", "updated", task["updated_at"]),
            ("Deadline", "deadline", task.get("deadline_at") or "—"),
            ("Reason", "reason", task.get("reason") or "—"),
        )
    )
    outcome = _outcome(task)
    events_url = "/v1/tasks/" + urllib.parse.quote(str(task["id"]), safe="") + "/events"
    terminal = status in {str(s) for s in TERMINAL}
    return (
        f"{_logout_form(auth)}"
        '<p><a href="/ui">← all tasks</a></p>'
        f'<h1>Task <code id="task-id">{_e(str(task["id"]))}</code> '
        f'<span id="status" class="badge {_e(status)}">{_e(status)}</span></h1>'
        f"<dl>{facts}</dl>"
        f'<h2>Route</h2><ol id="route" class="route">{steps}</ol>'
        f'<div id="outcome">{outcome}</div>'
        '<h2>Events <span id="stream-state" class="muted"></span></h2>'
        f'<ol id="events" data-url="{_e(events_url)}" data-terminal="{str(terminal).lower()}">'
        "</ol>"
    )


def _outcome(task: Mapping[str, Any]) -> str:
    """What the task asks for or ended with: the pause, the join counts, the error, the
    result (the same sections the script renders)."""
    sections = []
    if task.get("pause"):
        sections.append(("Waiting for input", "pause", task["pause"]))
    if task.get("join"):
        sections.append(("Join", "join", task["join"]))
    if task.get("error") is not None:
        sections.append(("Error", "error", task["error"]))
    if task.get("status") == TaskStatus.SUCCEEDED:
        sections.append(("Result", "result", task.get("result")))
    return "".join(
        f'<h2>{_e(title)}</h2><pre id="{_e(field)}">{_e(_json_text(value))}</pre>'
        for title, field, value in sections
    )


_SUMP_FILTERS = ("actor", "reason", "since")
_SUMP_COLUMNS = ("Id", "Actor", "Reason", "Attempt", "Failed at", "Error", "")


def _sump_body(
    rows: Sequence[redrive.Summary] | None,
    shown: Mapping[str, str],
    *,
    auth: bool,
    problem: str | None,
) -> str:
    """The sump table with its filters; with `problem` (no store configured) just that."""
    heading = f"{_logout_form(auth)}<h1>Sump</h1>"
    if rows is None:
        return heading + f'<p class="problem" id="problem">{_e(problem or "")}</p>'
    inputs = " ".join(
        f'<label>{_e(label)} <input type="search" name="{name}" id="{name}-filter" '
        f'value="{_e(shown.get(name, ""))}" placeholder="{_e(hint)}" maxlength="{MAX_QUERY}">'
        "</label>"
        for name, label, hint in (
            ("actor", "Actor", "infer"),
            ("reason", "Reason", "HandlerError"),
            ("since", "Since", "1h or 2026-12-01T10:00:00Z"),
        )
    )
    head = "".join(f"<th>{_e(column)}</th>" for column in _SUMP_COLUMNS)
    return (
        f"{heading}"
        '<p class="muted">What x-sump kept of envelopes that failed or could not be processed, '
        "newest failure first. Redrive sends one back to the actor that failed it, with the "
        "steps it had not run; it leaves the sump once the broker took it.</p>"
        f'<form id="filters" method="get" action="/ui/sump">{inputs} '
        '<button type="submit">Filter</button>'
        '<span id="refreshed" class="muted"></span></form>'
        f'<table id="sump"><thead><tr>{head}</tr></thead>'
        f"<tbody>{''.join(_sump_row(row) for row in rows)}</tbody></table>"
        f'<p id="empty" class="muted"{"" if not rows else " hidden"}>No sump record matches.</p>'
    )


def _sump_row(row: redrive.Summary) -> str:
    attempt = "" if row.attempt is None else str(row.attempt)
    cells = (
        ("id", row.id), ("actor", row.actor), ("reason", row.reason), ("attempt", attempt),
        ("failed", row.failed_at), ("error", redrive.cut(row.error)),
    )  # fmt: skip
    return (
        f'<tr data-id="{_e(row.id)}">'
        + "".join(f'<td class="{name}">{_e(text)}</td>' for name, text in cells)
        + f'<td class="action"><button type="button" class="redrive" data-id="{_e(row.id)}">'
        'Redrive</button> <span class="outcome"></span></td></tr>'
    )


def _login_page(target: str, problem: str | None, *, status: int = 200) -> HTMLResponse:
    notice = f'<p class="problem" id="problem">{_e(problem)}</p>' if problem else ""
    body = (
        "<h1>Log in</h1>"
        "<p>This gateway needs an API key. It is kept in a cookie for this browser session "
        "and sent only to this gateway.</p>"
        f"{notice}"
        '<form method="post" action="/ui/login" id="login">'
        f'<input type="hidden" name="next" value="{_e(target)}">'
        '<label>API key <input type="password" name="key" id="key" autocomplete="off" '
        "required autofocus></label> "
        '<button type="submit">Log in</button></form>'
    )
    return _page("Log in", body, page="login", status=status)
