"""The dashboard: one page served by the server, live over Socket.IO.

Plain HTML, CSS and ES modules under `joblib_server/static/dashboard/`: nothing to
build, no third-party script. The page signs in with a token kept in the tab's
session storage (never in a URL), reads the REST API with it and follows the
rooms' events over its own small Socket.IO client.

The standalone app serves it at `/`; a host mounts the same routes where it likes,
`Mount("/ops/jobs", routes=dashboard_routes())`, and tells the page where the API
and Socket.IO answer when they are not at `/v1/joblib` and `/socket.io`.
"""

from __future__ import annotations

from html import escape

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from joblib_protocol import API_PREFIX

ASSETS = "/dashboard"
"""Where the page's scripts and styles are served, below the page itself."""

SOCKETIO_PATH = "/socket.io"

# Only this origin's own scripts, styles and connections (REST and WebSocket):
# a task's result or error is shown as text, and could not run if it tried.
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; "
        "img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
        "form-action 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="joblib-api" content="{api}">
<meta name="joblib-socketio" content="{socketio}">
<title>joblib</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="{assets}/dashboard.css">
<script type="module" src="{assets}/app.js"></script>
</head>
<body>
<header>
  <h1>joblib</h1>
  <span id="connection" class="connection" data-state="offline">offline</span>
  <span id="whoami"></span>
  <button id="sign-out" type="button" hidden>Sign out</button>
</header>
<main>
  <section id="sign-in" hidden>
    <form id="sign-in-form" method="post" autocomplete="off">
      <label for="token">Token</label>
      <input id="token" type="password" autocomplete="off" required>
      <button type="submit">Sign in</button>
      <p id="sign-in-error" class="problem" role="alert"></p>
    </form>
    <p class="hint">The token stays in this tab (its session storage) and goes
    only in the <code>Authorization</code> header and the Socket.IO handshake.</p>
  </section>
  <div id="board" hidden>
    <nav>
      <h2>Rooms</h2>
      <ul id="rooms"></ul>
      <form id="open-room-form" autocomplete="off">
        <input id="open-room" placeholder="open a room by id" aria-label="room id">
        <button type="submit">Open</button>
      </form>
    </nav>
    <section id="room" hidden>
      <h2 id="room-title"></h2>
      <p id="room-problem" class="problem" role="alert"></p>
      <div class="panels">
        <div>
          <h3>Jobs</h3>
          <table id="jobs"><thead><tr><th>job</th><th>workers
          (heartbeat age)</th></tr></thead><tbody></tbody></table>
        </div>
        <div>
          <h3>Tasks per second and queue depth, last 5 minutes</h3>
          <canvas id="chart" width="560" height="150"></canvas>
          <ul id="legend" class="legend"></ul>
        </div>
      </div>
      <h3>Tasks</h3>
      <table id="tasks">
        <thead><tr><th>task</th><th>job</th><th>status</th><th>attempt</th>
        <th>progress</th><th>result or error</th><th>submitted</th><th></th></tr>
        </thead>
        <tbody></tbody>
      </table>
    </section>
  </div>
</main>
</body>
</html>
"""


def dashboard_routes(
    *, api_prefix: str = API_PREFIX, socketio_path: str = SOCKETIO_PATH
) -> list[BaseRoute]:
    """The dashboard's routes: the page at `/` and its files under `/dashboard/`.

    Relative to where they are mounted. `api_prefix` and `socketio_path` are
    paths from the root of the host's app (a proxy's prefix, the ASGI
    `root_path`, is added in front); the defaults are where the standalone
    server and the README's host example serve them.
    """
    for name, path in (("api_prefix", api_prefix), ("socketio_path", socketio_path)):
        if not path.startswith("/"):
            raise ValueError(f"{name} must be a path starting with '/': {path!r}")

    async def page(request: Request) -> Response:
        # root_path: where these routes are mounted (with any proxy prefix);
        # app_root_path: where the host's app itself is (the proxy prefix).
        mounted = request.scope.get("root_path", "")
        app_root = request.scope.get("app_root_path", mounted)
        html = _PAGE.format(
            api=escape(app_root + api_prefix.rstrip("/")),
            socketio=escape(app_root + socketio_path.rstrip("/")),
            assets=escape(mounted + ASSETS),
        )
        return HTMLResponse(html, headers=_HEADERS)

    assets = StaticFiles(packages=[("joblib_server", "static/dashboard")])
    return [
        Route("/", page, methods=["GET"], name="dashboard"),
        Mount(ASSETS, app=assets, name="dashboard-assets"),
    ]
