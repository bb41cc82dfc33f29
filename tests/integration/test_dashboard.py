"""The dashboard in a real headless Chromium (Debian's `chromium`, driven by
Playwright): sign in, watch a room's tasks change live, cancel from the page.

REST plays the submitter and the worker; the page only watches and cancels. The
server holds bob to rooms matching `bob-*` (`RoomPatterns`), as the standalone
server's token table does.
"""

from __future__ import annotations

import re
import shutil
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from joblib_server import (
    Identity,
    RoomPatterns,
    StandaloneSettings,
    TokenAuth,
    create_app,
)
from tests.support.rest import rest
from tests.support.servers import LiveServer, make_settings, serve_in_thread
from tests.support.services import service_missing
from tests.support.tokens import ALICE, BOB, TOKENS

pytestmark = [pytest.mark.slow, pytest.mark.browser]

CHROMIUM = "/usr/bin/chromium"
CAROL = "carol-token"  # may read every room, and cancel only what she submitted


def _app(database_url: str) -> Any:
    standalone = StandaloneSettings(
        database_url=database_url,
        socketio_ping_interval_seconds=1,
        socketio_ping_timeout_seconds=1,
        joblib=make_settings(),
    )
    tokens = {**TOKENS, CAROL: Identity("carol")}
    policy = RoomPatterns({"bob": ["bob-*"]})
    return create_app(standalone, TokenAuth(tokens), policy=policy)


@pytest.fixture
def server(database_url: str) -> Iterator[LiveServer]:
    with serve_in_thread(_app(database_url)) as live:
        yield live


@pytest.fixture
def browser(database_url: str) -> Iterator[Browser]:
    """Chromium, started once the database is ready: Playwright's event loop,
    running in this thread from here on, leaves no room for the database
    fixtures' own."""
    if shutil.which(CHROMIUM) is None:
        service_missing(f"Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM)
        yield browser
        browser.close()


class Tab:
    """One browser tab on the dashboard, with every URL it asked for."""

    def __init__(self, browser: Browser, server: LiveServer) -> None:
        self.context = browser.new_context()
        self.page: Page = self.context.new_page()
        self.urls: list[str] = []
        self.errors: list[str] = []
        self.page.on("request", lambda request: self.urls.append(request.url))
        self.page.on("websocket", lambda socket: self.urls.append(socket.url))
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(server.url + "/")

    def sign_in(self, token: str) -> None:
        self.page.locator("#token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        expect(self.page.locator("#connection")).to_have_text("live")

    def open_room(self, room: str) -> None:
        self.page.locator(f'#rooms li[data-room="{room}"] button').click()
        # Observing the room: from here on no event of it is missed.
        expect(self.page.locator("#room")).to_have_attribute("data-joined", "true")

    def row(self, task_id: str) -> Any:
        return self.page.locator(f'#tasks tr[data-task-id="{task_id}"]')

    def close(self) -> None:
        assert self.errors == [], self.errors
        self.context.close()


@pytest.fixture
def alice(server: LiveServer) -> Iterator[httpx.Client]:
    with rest(server.api, ALICE) as client:
        yield client


@pytest.fixture
def bob(server: LiveServer) -> Iterator[httpx.Client]:
    with rest(server.api, BOB) as client:
        yield client


@pytest.fixture
def tabs(browser: Browser, server: LiveServer) -> Iterator[list[Tab]]:
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        tab.close()


def test_a_room_live_from_sign_in_to_cancel(
    browser: Browser,
    server: LiveServer,
    tabs: list[Tab],
    alice: httpx.Client,
    bob: httpx.Client,
) -> None:
    expect.set_options(timeout=10_000)
    room = f"lab-{uuid.uuid4().hex[:6]}"
    job = alice.put(
        f"/rooms/{room}/jobs",
        json={"category": "modifiers", "name": "Relax", "schema": {}},
    ).json()
    job_name, worker_id = job["full_name"], job["worker_id"]
    bob_room = f"bob-{uuid.uuid4().hex[:6]}"
    bob.put(f"/rooms/{bob_room}/jobs", json={"category": "modifiers", "name": "Own"})

    tab = Tab(browser, server)
    tabs.append(tab)
    page = tab.page
    expect(page.locator("#sign-in")).to_be_visible()
    tab.sign_in(ALICE)
    expect(page.locator(f'#rooms li[data-room="{room}"]')).to_contain_text("1 jobs")
    tab.open_room(room)
    # The job with its worker and the worker's heartbeat age.
    worker = page.locator(f'#jobs tr[data-job="{job_name}"] .worker')
    expect(worker).to_have_text(re.compile(rf"^{worker_id[:8]} · \d s$"))

    # Submitted through REST: the row appears, then follows the worker.
    task = alice.post(f"/rooms/{room}/tasks/{job_name}", json={"payload": {}}).json()
    row = tab.row(task["id"])
    expect(row).to_have_attribute("data-status", "pending")
    expect(page.locator("#legend")).to_contain_text(f"pending: {job_name}")
    claimed = alice.post("/tasks/claim", json={"worker_id": worker_id}).json()
    assert claimed["task"]["id"] == task["id"]
    expect(row).to_have_attribute("data-status", "claimed")
    alice.patch(f"/tasks/{task['id']}", json={"status": "running"})
    expect(row.locator(".status")).to_have_text("running")
    progress = {"current": 3, "total": 10, "message": "relaxing"}
    assert alice.put(f"/tasks/{task['id']}/progress", json=progress).status_code == 204
    bar = row.get_by_role("progressbar")
    expect(bar).to_have_attribute("aria-valuenow", "3")
    expect(bar).to_have_attribute("aria-valuemax", "10")
    expect(row).to_contain_text("3 / 10 relaxing")
    expect(row.locator("button.cancel")).to_be_visible()
    done = {"status": "completed", "result": {"energy": -1.5}}
    alice.patch(f"/tasks/{task['id']}", json=done)
    expect(row).to_have_attribute("data-status", "completed")
    expect(row.locator(".result")).to_have_text('{"energy":-1.5}')
    expect(row.locator("button.cancel")).to_have_count(0)

    # Another, cancelled from the page.
    other = alice.post(f"/rooms/{room}/tasks/{job_name}", json={"payload": {}}).json()
    other_row = tab.row(other["id"])
    expect(other_row).to_have_attribute("data-status", "pending")
    other_row.locator("button.cancel").click()
    expect(other_row).to_have_attribute("data-status", "cancelled")
    assert alice.get(f"/tasks/{other['id']}").json()["status"] == "cancelled"

    # Carol reads the room, but may not cancel alice's task: the page says why.
    third = alice.post(f"/rooms/{room}/tasks/{job_name}", json={"payload": {}}).json()
    carol = Tab(browser, server)
    tabs.append(carol)
    carol.sign_in(CAROL)
    carol.open_room(room)
    carol.row(third["id"]).locator("button.cancel").click()
    expect(carol.row(third["id"])).to_contain_text("cannot cancel: forbidden")
    expect(carol.row(third["id"])).to_have_attribute("data-status", "pending")
    assert alice.get(f"/tasks/{third['id']}").json()["status"] == "pending"

    # Bob is held to bob-* rooms: alice's room is not his to see.
    bob_tab = Tab(browser, server)
    tabs.append(bob_tab)
    bob_tab.sign_in(BOB)
    rooms = bob_tab.page.locator("#rooms li")
    expect(rooms).to_have_count(1)
    expect(rooms).to_have_attribute("data-room", bob_room)
    bob_tab.page.locator("#open-room").fill(room)
    bob_tab.page.get_by_role("button", name="Open").click()
    expect(bob_tab.page.locator("#room-problem")).to_contain_text("forbidden")
    expect(bob_tab.page.locator("#tasks tbody tr")).to_have_count(0)

    # A reload keeps the tab signed in (session storage) and in its room.
    page.reload()
    expect(page.locator("#connection")).to_have_text("live")
    expect(row).to_have_attribute("data-status", "completed")
    assert page.evaluate("sessionStorage.getItem('joblib.token')") == ALICE

    # The token went in headers and the Socket.IO handshake, never in a URL.
    for opened in tabs:
        assert opened.urls, "the tab asked for nothing"
        assert any("/socket.io/" in url for url in opened.urls)
        assert not [url for url in opened.urls if "token" in url], opened.urls
        for token in (ALICE, BOB, CAROL):
            assert not [url for url in opened.urls if token in url]


def test_after_a_server_restart_the_page_reconnects_and_catches_up(
    browser: Browser, database_url: str
) -> None:
    expect.set_options(timeout=15_000)
    room = f"lab-{uuid.uuid4().hex[:6]}"
    with serve_in_thread(_app(database_url)) as first, rest(first.api, ALICE) as api:
        port = int(first.url.rsplit(":", 1)[1])
        job = api.put(
            f"/rooms/{room}/jobs", json={"category": "modifiers", "name": "J"}
        )
        job_name = job.json()["full_name"]
        tab = Tab(browser, first)
        tab.sign_in(ALICE)
        tab.open_room(room)
    try:
        expect(tab.page.locator("#connection")).to_have_text("reconnecting")
        again = serve_in_thread(_app(database_url), port=port)
        with again as second, rest(second.api, ALICE) as api:
            # Submitted as the page comes back, its event maybe missed: the
            # page reads the room again once it has reconnected.
            task = api.post(f"/rooms/{room}/tasks/{job_name}", json={}).json()
            expect(tab.page.locator("#connection")).to_have_text("live")
            expect(tab.row(task["id"])).to_have_attribute("data-status", "pending")
            # And it is live again: the next change arrives as an event.
            api.patch(f"/tasks/{task['id']}", json={"status": "cancelled"})
            expect(tab.row(task["id"])).to_have_attribute("data-status", "cancelled")
            expect(tab.page.locator("#room-problem")).to_have_text("")
    finally:
        tab.close()
