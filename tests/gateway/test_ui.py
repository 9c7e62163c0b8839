"""The web view (asya_gateway.ui) over HTTP, in process: the pages render what the store
holds, filter it, escape whatever a task carries, and sit behind the same API key as the
API (a login form, then an HttpOnly cookie that authorizes reads and never a change)."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from asya_gateway.app import public_app
from asya_gateway.auth import ApiKeys, hash_key
from asya_gateway.ui import (
    COOKIE,
    cookie_may_authorize,
    matching,
    origin_is,
    route_steps,
    safe_next,
)
from asya_shared import records
from tests.gateway.gateway_fixtures import (
    Harness,
    Lifespan,
    harness,
    local_transport,
    make_harness,
    read_events,
    report,
    sqlite_store,
)

__all__ = ["harness", "local_transport", "make_harness", "sqlite_store"]  # fixtures used here

ACME_KEY, GLOBEX_KEY = "acme-ui-key", "globex-ui-key"
KEYS = ApiKeys.parse(f"{hash_key(ACME_KEY)}: acme\n{hash_key(GLOBEX_KEY)}: globex\n", "keys")
HOSTILE = '"><script>alert("owned")</script><img src=x onerror=alert(1)>'


async def submit(harness: Harness, task_id: str, route: list[str], **headers: str) -> None:
    response = await harness.submit(
        {"id": task_id, "route": route, "payload": {"text": HOSTILE}}, headers=headers
    )
    assert response.status_code == 201, response.text


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def cookie(key: str) -> dict[str, str]:
    return {"Cookie": f"{COOKIE}={key}"}


def rows(page: str) -> dict[str, str]:
    """The list page's rows: task id -> the row's status."""
    return dict(re.findall(r'<tr data-id="([^"]+)" data-status="([^"]+)">', page))


async def login(harness: Harness, key: str, **headers: str) -> httpx.Response:
    return await harness.public.post(
        "/ui/login",
        content=f"key={key}&next=%2Fui%3Fstatus%3Dpending",
        headers={"Content-Type": "application/x-www-form-urlencoded", **headers},
    )


# ---------------------------------------------------------------------------- the list


async def test_the_list_shows_recent_tasks_with_route_status_and_progress(
    harness: Harness,
) -> None:
    await submit(harness, "first", ["a", "b"])
    await submit(harness, "second", ["a", "b", "c"])
    await harness.report(report("second", "processing", prev=["a"], curr="b", next_=["c"]))

    response = await harness.public.get("/ui")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    page = response.text
    assert rows(page) == {"second": "running", "first": "pending"}
    assert page.index('data-id="second"') < page.index('data-id="first"')  # newest first
    assert "a → b → c" in page
    assert ">33%<" in page  # one of three actors done
    assert 'href="/ui/tasks/first"' in page
    assert '<script src="/ui/static/ui.js" defer></script>' in page


async def test_the_list_filters_by_status_and_by_text_in_the_id(harness: Harness) -> None:
    for task_id in ("alpha-1", "alpha-2", "beta-1"):
        await submit(harness, task_id, ["a"])
    await harness.report(report("alpha-2", "succeeded", prev=["a"], curr="x-sink", result=1))

    succeeded = await harness.public.get("/ui", params={"status": "succeeded"})
    alphas = await harness.public.get("/ui", params={"q": "ALPHA"})
    pending_alphas = await harness.public.get("/ui", params={"q": "alpha", "status": "pending"})
    none = await harness.public.get("/ui", params={"q": "gamma"})

    assert rows(succeeded.text) == {"alpha-2": "succeeded"}
    assert '<option value="succeeded" selected>' in succeeded.text
    assert set(rows(alphas.text)) == {"alpha-1", "alpha-2"}
    assert 'value="ALPHA"' in alphas.text
    assert rows(pending_alphas.text) == {"alpha-1": "pending"}
    assert rows(none.text) == {}
    assert '<p id="empty" class="muted">No tasks match.</p>' in none.text


async def test_a_bad_filter_is_refused_saying_what_to_pick(harness: Harness) -> None:
    status = await harness.public.get("/ui", params={"status": "done"})
    long = await harness.public.get("/ui", params={"q": "x" * 201})

    assert status.status_code == 400
    assert "Status &#x27;done&#x27; is not a task status" in status.text
    assert "pending, running, paused, succeeded, failed, canceled" in status.text
    assert long.status_code == 400
    assert "at most 200" in long.text


# ------------------------------------------------------------------------- one task


async def test_a_task_page_shows_its_route_done_current_and_next(harness: Harness) -> None:
    await submit(harness, "walk", ["a", "b", "c"])
    await harness.report(report("walk", "processing", prev=["a"], curr="b", next_=["c"]))

    page = (await harness.public.get("/ui/tasks/walk")).text

    steps = re.findall(r'<li class="(\w+)" data-state="\w+">([^<]+)</li>', page)
    assert steps == [("done", "a"), ("current", "b"), ("next", "c")]
    assert '<span id="status" class="badge running">running</span>' in page
    assert '<dd id="progress">33%</dd>' in page
    assert 'data-url="/v1/tasks/walk/events"' in page
    assert 'id="result"' not in page


async def test_a_succeeded_task_shows_its_result_and_every_step_done(harness: Harness) -> None:
    await submit(harness, "done", ["a", "b"])
    await harness.report(
        report("done", "succeeded", prev=["a", "b"], curr="x-sink", result={"answer": 42})
    )

    page = (await harness.public.get("/ui/tasks/done")).text

    assert re.findall(r'<li class="(\w+)"', page) == ["done", "done", "done"]
    assert '<pre id="result">{\n  &quot;answer&quot;: 42\n}</pre>' in page
    assert 'data-terminal="true"' in page


async def test_an_unknown_task_is_a_404_page(harness: Harness) -> None:
    response = await harness.public.get("/ui/tasks/nothing-here")

    assert response.status_code == 404
    assert "There is no task &#x27;nothing-here&#x27;" in response.text


async def test_whatever_a_task_carries_is_shown_escaped(harness: Harness) -> None:
    await submit(harness, "evil-ok", ["a"])
    await submit(harness, "evil-failed", ["a"])
    await harness.report(
        report("evil-ok", "succeeded", prev=["a"], curr="x-sink", result={HOSTILE: HOSTILE}),
        report(
            "evil-failed",
            "failed",
            curr="a",
            reason=HOSTILE,
            error={"type": HOSTILE, "mro": [HOSTILE], "message": HOSTILE, "traceback": HOSTILE},
        ),
    )

    pages = [
        (await harness.public.get(path, params=params)).text
        for path, params in (
            ("/ui/tasks/evil-ok", {}),
            ("/ui/tasks/evil-failed", {}),
            ("/ui", {"q": HOSTILE}),
            ("/ui", {"status": HOSTILE}),
        )
    ]

    for page in pages:
        assert "<script>alert" not in page
        assert "<img src=x" not in page
        assert page.count("<script") == 1  # the page's own script tag, nothing else
    assert html.escape('<script>alert(\\"owned\\")</script>') in pages[0]  # JSON-quoted
    assert f'<dd id="reason">{html.escape(HOSTILE)}</dd>' in pages[1]
    assert f'value="{html.escape(HOSTILE)}"' in pages[2]


# ------------------------------------------------------------------------------- auth


@pytest.fixture
async def keyed(make_harness: Callable[..., Any]) -> Harness:
    made: Harness = await make_harness(keys=KEYS)
    return made


async def test_without_a_key_the_pages_send_you_to_the_login_form(keyed: Harness) -> None:
    page = await keyed.public.get("/ui", params={"status": "running"})
    task = await keyed.public.get("/ui/tasks/x")
    wrong = await keyed.public.get("/ui", headers=cookie("guess"))
    form = await keyed.public.get("/ui/login", params={"next": "/ui?status=running"})
    hostile = await keyed.public.get("/ui/login", params={"next": "/ui?" + HOSTILE})

    assert page.status_code == 303
    assert page.headers["location"] == "/ui/login?next=%2Fui%3Fstatus%3Drunning"
    assert task.headers["location"] == "/ui/login?next=%2Fui%2Ftasks%2Fx"
    assert wrong.status_code == 303
    assert form.status_code == 200
    assert 'type="password" name="key"' in form.text
    assert 'name="next" value="/ui?status=running"' in form.text
    assert f'name="next" value="/ui?{html.escape(HOSTILE)}"' in hostile.text
    assert "<script>alert" not in hostile.text


async def test_login_keeps_the_key_in_an_httponly_strict_cookie(keyed: Harness) -> None:
    bad = await login(keyed, "guess")
    good = await login(keyed, ACME_KEY)

    assert bad.status_code == 401
    assert "That API key is not valid" in bad.text
    assert "set-cookie" not in bad.headers
    assert good.status_code == 303
    assert good.headers["location"] == "/ui?status=pending"
    set_cookie = good.headers["set-cookie"]
    assert set_cookie.startswith(f"{COOKIE}={ACME_KEY};")
    assert "HttpOnly" in set_cookie
    assert "SameSite=strict" in set_cookie
    assert "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain http here; https gets Secure


async def test_a_login_posted_from_another_site_is_refused(keyed: Harness) -> None:
    foreign = await login(keyed, ACME_KEY, Origin="https://evil.example")
    opaque = await login(keyed, ACME_KEY, Origin="null")
    ours = await login(keyed, ACME_KEY, Origin="http://gateway")

    assert foreign.status_code == 403
    assert "set-cookie" not in foreign.headers
    assert opaque.status_code == 403
    assert ours.status_code == 303


async def test_the_cookie_shows_only_its_tenants_tasks(keyed: Harness) -> None:
    await submit(keyed, "acme-task", ["a"], **bearer(ACME_KEY))
    await submit(keyed, "globex-task", ["a"], **bearer(GLOBEX_KEY))

    acme_list = await keyed.public.get("/ui", headers=cookie(ACME_KEY))
    acme_api = await keyed.public.get("/v1/tasks", headers=cookie(ACME_KEY))
    acme_own = await keyed.public.get("/ui/tasks/acme-task", headers=cookie(ACME_KEY))
    acme_other = await keyed.public.get("/ui/tasks/globex-task", headers=cookie(ACME_KEY))

    assert rows(acme_list.text) == {"acme-task": "pending"}
    assert acme_api.status_code == 200
    assert [task["id"] for task in acme_api.json()["tasks"]] == ["acme-task"]
    assert acme_own.status_code == 200
    assert acme_other.status_code == 404


async def test_the_cookie_opens_the_event_stream(keyed: Harness) -> None:
    await submit(keyed, "streamed", ["a"], **bearer(ACME_KEY))
    await keyed.report(report("streamed", "succeeded", prev=["a"], curr="x-sink", result=7))

    # httpx's ASGI transport hands the body over once the stream ended (after the terminal
    # status), which is all this test needs.
    with_cookie = await keyed.public.get("/v1/tasks/streamed/events", headers=cookie(ACME_KEY))
    without = await keyed.public.get("/v1/tasks/streamed/events")

    assert with_cookie.status_code == 200

    async def lines() -> Any:
        for line in with_cookie.text.splitlines():
            yield line

    events = [event async for event in read_events(lines())]
    assert [(event.kind, event.data["status"]) for event in events] == [("status", "succeeded")]
    assert without.status_code == 401


async def test_the_cookie_never_authorizes_a_change(keyed: Harness) -> None:
    await submit(keyed, "kept", ["a"], **bearer(ACME_KEY))

    posted = await keyed.public.post(
        "/v1/tasks", json={"route": ["a"], "payload": 1}, headers=cookie(ACME_KEY)
    )
    canceled = await keyed.public.delete("/v1/tasks/kept", headers=cookie(ACME_KEY))
    resumed = await keyed.public.post(
        "/v1/tasks/kept/resume", json={"input": {}}, headers=cookie(ACME_KEY)
    )
    task = await keyed.public.get("/v1/tasks/kept", headers=bearer(ACME_KEY))

    assert [posted.status_code, canceled.status_code, resumed.status_code] == [401, 401, 401]
    assert task.json()["status"] == "pending"


async def test_a_header_wins_over_the_cookie(keyed: Harness) -> None:
    response = await keyed.public.get(
        "/v1/tasks", headers={**cookie(ACME_KEY), **bearer("wrong-key")}
    )

    assert response.status_code == 401


async def test_logout_forgets_the_cookie(keyed: Harness) -> None:
    response = await keyed.public.post("/ui/logout", headers=cookie(ACME_KEY))

    assert response.status_code == 303
    assert response.headers["location"] == "/ui/login"
    assert response.headers["set-cookie"].startswith(f'{COOKIE}="";')
    assert "Max-Age=0" in response.headers["set-cookie"]


async def test_with_auth_off_the_view_is_open(harness: Harness) -> None:
    page = await harness.public.get("/ui")
    form = await harness.public.get("/ui/login")

    assert page.status_code == 200
    assert 'action="/ui/logout"' not in page.text
    assert form.status_code == 303
    assert form.headers["location"] == "/ui"


# ---------------------------------------------------------------------------- the sump


@pytest.fixture
async def sump_view(
    make_harness: Callable[..., Any], tmp_path: Path
) -> AsyncIterator[tuple[httpx.AsyncClient, Path]]:
    """A gateway app with a file sump store (the harness's gateway, a public app of its own);
    auth on."""
    harness_ = await make_harness(keys=KEYS)
    root = tmp_path / "sump"
    root.mkdir()
    app = public_app(harness_.gateway, sump_store=f"file://{root}")
    lifespan = await Lifespan.start(app)
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")
    try:
        yield client, root
    finally:
        await client.aclose()
        await lifespan.stop()


def sump_record(envelope_id: str, failed_at: str, error: str) -> bytes:
    fields = {
        "id": envelope_id,
        "route": {"prev": ["a", "x-sink"], "curr": "x-sump", "next": []},
        "status": {"phase": "failed", "actor": "a", "attempt": 2, "reason": "HandlerError",
                   "updated_at": failed_at, "error": {"type": "Boom", "message": error}},
    }  # fmt: skip
    return records.encode(records.build(fields, {"n": 1}))


async def test_the_sump_page_lists_records_newest_first_with_a_redrive_button(
    sump_view: tuple[httpx.AsyncClient, Path],
) -> None:
    client, root = sump_view
    (root / records.key("old")).write_bytes(sump_record("old", "2026-12-01T10:00:00Z", "one"))
    (root / records.key("new")).write_bytes(sump_record("new", "2026-12-01T11:00:00Z", HOSTILE))

    login_first = await client.get("/ui/sump")
    response = await client.get("/ui/sump", headers=cookie(ACME_KEY))
    filtered = await client.get("/ui/sump?since=2026-12-01T10:30:00Z", headers=cookie(ACME_KEY))

    assert login_first.status_code == 303
    assert login_first.headers["location"] == "/ui/login?next=%2Fui%2Fsump"
    assert response.status_code == 200
    page = response.text
    assert re.findall(r'<tr data-id="([^"]+)">', page) == ["new", "old"]
    assert '<button type="button" class="redrive" data-id="new">Redrive</button>' in page
    assert '<td class="attempt">2</td>' in page
    assert '<a href="/ui/sump">Sump</a>' in page  # the navigation bar
    assert 'data-page="sump"' in page
    assert HOSTILE not in page
    assert html.escape(f"Boom: {HOSTILE}"[:59]) in page
    assert re.findall(r'<tr data-id="([^"]+)">', filtered.text) == ["new"]


async def test_a_bad_sump_filter_is_a_400_page_saying_what_is_accepted(
    sump_view: tuple[httpx.AsyncClient, Path],
) -> None:
    client, _ = sump_view

    response = await client.get("/ui/sump?since=yesterday", headers=cookie(ACME_KEY))

    assert response.status_code == 400
    assert "is neither a duration" in response.text


async def test_the_sump_page_without_a_store_says_none_is_configured(harness: Harness) -> None:
    response = await harness.public.get("/ui/sump")

    assert response.status_code == 200
    assert "no sump store configured (ASYA_SUMP_STORE)" in response.text
    assert 'data-page="sump"' not in response.text  # nothing to poll


# ---------------------------------------------------------------------------- static


async def test_the_script_and_style_sheet_are_served_and_nothing_else(harness: Harness) -> None:
    script = await harness.public.get("/ui/static/ui.js")
    style = await harness.public.get("/ui/static/ui.css")
    other = await harness.public.get("/ui/static/ui.py")
    climbing = await harness.public.get("/ui/static/..%2Fui.py")

    assert script.status_code == 200
    assert script.headers["content-type"].startswith("text/javascript")
    assert "new EventSource(" in script.text
    assert "innerHTML" not in script.text
    assert style.headers["content-type"].startswith("text/css")
    assert other.status_code == 404
    assert climbing.status_code == 404


# ---------------------------------------------------------------------- pure decisions


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        (None, "/ui"),
        ("/ui", "/ui"),
        ("/ui/tasks/a?x=1", "/ui/tasks/a?x=1"),
        ("/ui?status=failed", "/ui?status=failed"),
        ("//evil.example/ui", "/ui"),
        ("https://evil.example/ui", "/ui"),
        ("/uix", "/ui"),
        ("/ui/\\evil", "/ui"),
        ("/v1/tasks", "/ui"),
    ],
)
def test_login_returns_only_to_a_page_of_the_view(target: str | None, expected: str) -> None:
    assert safe_next(target) == expected


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/tasks", True),
        ("GET", "/v1/tasks/x/events", True),
        ("HEAD", "/ui/tasks/x", True),
        ("GET", "/ui", True),
        ("POST", "/v1/tasks", False),
        ("DELETE", "/v1/tasks/x", False),
        ("POST", "/v1/tasks/x/resume", False),
        ("POST", "/ui/login", False),
        ("GET", "/v1/models", False),
        ("GET", "/v1/tasksx", False),
        ("GET", "/mcp", False),
        ("GET", "/v1/sump", True),
        ("GET", "/v1/sump/x", True),
        ("GET", "/ui/sump", True),
        ("POST", "/v1/sump/x/redrive", False),  # not from this gateway's page
        ("POST", "/v1/sump", False),
        ("DELETE", "/v1/sump/x", False),
    ],
)
def test_the_cookie_stands_in_for_the_key_on_reads_of_tasks_only(
    method: str, path: str, allowed: bool
) -> None:
    assert cookie_may_authorize(method, path) is allowed


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("POST", "/v1/sump/x/redrive", True),
        ("POST", "/v1/sump/a%2Fb/redrive", True),
        ("POST", "/v1/sump/x/redrive/more", False),
        ("POST", "/v1/tasks", False),
        ("DELETE", "/v1/tasks/x", False),
        ("POST", "/v1/tasks/x/resume", False),
    ],
)
def test_from_the_gateways_own_page_the_cookie_may_also_redrive(
    method: str, path: str, allowed: bool
) -> None:
    assert cookie_may_authorize(method, path, same_origin=True) is allowed


@pytest.mark.parametrize(
    ("origin", "host", "same"),
    [
        ("http://gw:8080", "gw:8080", True),
        ("https://gw", "gw", True),
        ("http://evil.example", "gw", False),
        ("http://gw:8080.evil.example", "gw:8080", False),
        ("null", "gw", False),
        (None, "gw", False),
        ("http://gw", None, False),
    ],
)
def test_origin_is_this_gateway_only_when_it_names_the_host(
    origin: str | None, host: str | None, same: bool
) -> None:
    assert origin_is(origin, host) is same


def test_route_steps() -> None:
    route = {"prev": ["a"], "curr": "b", "next": ["c", "d"]}
    states = [(step.actor, step.state) for step in route_steps(route, "running")]
    finished = [step.state for step in route_steps({"prev": ["a"], "curr": "x-sink"}, "succeeded")]

    assert states == [("a", "done"), ("b", "current"), ("c", "next"), ("d", "next")]
    assert finished == ["done", "done"]


def test_matching_is_plain_text_in_any_case() -> None:
    tasks = [{"id": "Alpha.1"}, {"id": "beta"}, {"id": "a.b"}]

    assert [t["id"] for t in matching(tasks, "alpha")] == ["Alpha.1"]
    assert [t["id"] for t in matching(tasks, ".")] == ["Alpha.1", "a.b"]  # not a pattern
    assert len(matching(tasks, "  ")) == 3
