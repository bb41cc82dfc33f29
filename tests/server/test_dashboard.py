"""The dashboard's page and files, as the standalone app and a host serve them.

The page itself, driven in a real browser, is `tests/integration/test_dashboard.py`.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount

from joblib_server import StandaloneSettings, TokenAuth, create_app
from joblib_server.dashboard import dashboard_routes
from joblib_server.problems import EXCEPTION_HANDLERS
from tests.support.rest import assert_problem
from tests.support.tokens import TOKENS

pytestmark = pytest.mark.anyio


class _Page(HTMLParser):
    """The page's meta values, scripts, stylesheets and inputs."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.meta: dict[str, str] = {}
        self.assets: list[str] = []
        self.inputs: dict[str, dict[str, str | None]] = {}
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "meta" and values.get("name"):
            self.meta[str(values["name"])] = str(values["content"])
        elif tag == "script" and values.get("src"):
            self.assets.append(str(values["src"]))
        elif tag == "link" and values.get("rel") == "stylesheet":
            self.assets.append(str(values["href"]))
        elif tag == "input":
            self.inputs[str(values.get("id"))] = values


def _client(app: object, root_path: str = "") -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, root_path=root_path)  # type: ignore[arg-type]
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")


@pytest.fixture
async def standalone(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = StandaloneSettings(database_url=f"sqlite:///{tmp_path / 'j.db'}")
    app = create_app(settings, TokenAuth(TOKENS), realtime=False)
    async with _client(app) as client:
        yield client


async def test_the_standalone_server_answers_the_page_at_its_root(
    standalone: httpx.AsyncClient,
) -> None:
    answer = await standalone.get("/")
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    page = _Page(answer.text)
    assert page.meta["joblib-api"] == "/v1/joblib"
    assert page.meta["joblib-socketio"] == "/socket.io"
    assert sorted(page.assets) == ["/dashboard/app.js", "/dashboard/dashboard.css"]
    # Only this origin's scripts run, and no form is sent anywhere: were the
    # script not to load, the token would still not land in a URL.
    policy = answer.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "form-action 'none'" in policy
    assert "name" not in page.inputs["token"]
    assert page.inputs["token"]["type"] == "password"


async def test_the_page_files_are_served_no_build_step(
    standalone: httpx.AsyncClient,
) -> None:
    page = _Page((await standalone.get("/")).text)
    scripts = [a for a in page.assets if a.endswith(".js")]
    seen: set[str] = set()
    while scripts:  # the modules and every module they import
        path = scripts.pop()
        if path in seen:
            continue
        seen.add(path)
        answer = await standalone.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith("text/javascript"), path
        base = path.rsplit("/", 1)[0]
        for imported in re.findall(r'from "\./([\w.]+)"', answer.text):
            scripts.append(f"{base}/{imported}")
    assert seen == {
        "/dashboard/app.js",
        "/dashboard/api.js",
        "/dashboard/chart.js",
        "/dashboard/socket.js",
    }
    css = await standalone.get("/dashboard/dashboard.css")
    assert css.headers["content-type"].startswith("text/css")


async def test_other_paths_still_answer_the_404_problem(
    standalone: httpx.AsyncClient,
) -> None:
    assert_problem(await standalone.get("/dashboard/missing.js"), 404, "not-found")
    assert_problem(await standalone.get("/nope"), 404, "not-found")
    assert_problem(await standalone.get("/v1/joblib/nope"), 404, "not-found")
    assert_problem(await standalone.post("/"), 405, "method-not-allowed")


async def test_a_host_mounts_it_where_it_likes_behind_a_proxy_prefix() -> None:
    host = Starlette(
        routes=[
            Mount(
                "/ops/jobs",
                routes=dashboard_routes(api_prefix="/api/jobs", socketio_path="/ws"),
            )
        ],
        exception_handlers=EXCEPTION_HANDLERS,
    )
    async with _client(host, root_path="/proxy") as client:
        answer = await client.get("/proxy/ops/jobs/")
        assert answer.status_code == 200
        page = _Page(answer.text)
        assert page.meta["joblib-api"] == "/proxy/api/jobs"
        assert page.meta["joblib-socketio"] == "/proxy/ws"
        assert "/proxy/ops/jobs/dashboard/app.js" in page.assets
        script = await client.get("/proxy/ops/jobs/dashboard/app.js")
        assert script.status_code == 200


def test_the_api_and_socket_paths_are_paths_from_the_root() -> None:
    with pytest.raises(ValueError, match="api_prefix"):
        dashboard_routes(api_prefix="v1/joblib")
    with pytest.raises(ValueError, match="socketio_path"):
        dashboard_routes(socketio_path="https://elsewhere/socket.io")
