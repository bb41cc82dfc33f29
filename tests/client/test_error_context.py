"""Client errors keep their context: the request, the server's word, the reason.

Every failure here is real: a live server, a port nothing listens on, a host
name that cannot resolve, an `https://` URL for a plain-HTTP server, a page
from a server that is not joblib, a port that never answers.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from joblib_client import (
    ApiClient,
    JobLibError,
    JobManager,
    NotFoundError,
    ServerError,
    SocketClient,
    TaskNotFoundError,
    TransportError,
)
from joblib_client._http import Rest
from joblib_server import StandaloneSettings, TokenAuth, create_app
from tests.support.foreign import answering, silent_port
from tests.support.servers import LiveServer, free_port, make_settings, serve_in_thread
from tests.support.tokens import ADMIN, ALICE, TOKENS

PROXY_404 = (
    "<html><head><title>404 Not Found</title></head>"
    "<body><center><h1>404 Not Found</h1></center><hr>nginx</body></html>"
)


def failure(base_url: str, path: str = "/workers", timeout: float = 10) -> JobLibError:
    """The error `GET path` meets on the server at `base_url`."""
    client = ApiClient(base_url, ADMIN, timeout=timeout)
    try:
        with pytest.raises(JobLibError) as caught:
            Rest(client).request("GET", path)
    finally:
        client.close()
    return caught.value


# REST: the server's problems


def test_a_doubled_prefix_names_the_url_it_asked(live_server: LiveServer) -> None:
    error = failure(live_server.api)  # the URL already ends in /v1/joblib

    url = f"{live_server.url}/v1/joblib/v1/joblib/workers"
    assert type(error) is NotFoundError
    assert (error.method, error.url, error.status) == ("GET", url, 404)
    assert str(error) == f"GET {url}: 404 not-found: Not Found"
    assert not error.foreign_answer


def test_a_problem_keeps_type_and_detail_after_the_request(
    live_server: LiveServer,
) -> None:
    task_id = uuid.uuid4()
    with (
        JobManager.connect(live_server.url, token=ALICE, socket=False) as manager,
        pytest.raises(TaskNotFoundError) as caught,
    ):
        manager.wait(task_id, timeout=1)

    error = caught.value
    url = f"{live_server.api}/tasks/{task_id}"
    assert str(error) == f"GET {url}: 404 task-not-found: no task {task_id}"
    assert error.detail == f"no task {task_id}"
    assert error.short_type == "task-not-found"
    assert error.summary() == f"404 task-not-found: no task {task_id}"


def test_query_parameters_are_part_of_the_url(live_server: LiveServer) -> None:
    client = ApiClient(live_server.url, ADMIN)
    with pytest.raises(JobLibError) as caught:
        Rest(client).request("GET", "/rooms/r/tasks", params={"status": "nope"})
    client.close()

    assert caught.value.status == 422
    assert caught.value.url == f"{live_server.api}/rooms/r/tasks?status=nope"


# REST: answers that are not joblib's


def test_a_proxy_page_is_said_to_be_no_joblib_answer() -> None:
    with answering(404, PROXY_404) as url:
        error = failure(url)

    assert type(error) is NotFoundError
    assert error.foreign_answer
    assert error.detail == "404 Not Found"  # the page's title, not its markup
    assert str(error) == (
        f"GET {url}/v1/joblib/workers: 404 Not Found (not a joblib answer): "
        "404 Not Found"
    )


def test_a_bad_gateway_says_its_status_and_text() -> None:
    with answering(502, "upstream went away\n", "text/plain") as url:
        error = failure(url)

    assert isinstance(error, ServerError)
    assert error.status == 502
    assert error.foreign_answer
    assert "502 Bad Gateway (not a joblib answer): upstream went away" in str(error)
    assert str(error).startswith(f"GET {url}/v1/joblib/workers: ")


# REST: no answer


def test_a_refused_port_says_nothing_listens() -> None:
    port = free_port()
    error = failure(f"http://127.0.0.1:{port}")

    assert isinstance(error, TransportError)
    assert error.reason == "connection-refused"
    assert error.status is None
    assert str(error) == (
        f"GET http://127.0.0.1:{port}/v1/joblib/workers: "
        f"connection refused: nothing listens at 127.0.0.1:{port}"
    )


def test_an_unknown_host_says_it_does_not_resolve() -> None:
    error = failure("http://nonexistent.invalid")

    assert isinstance(error, TransportError)
    assert error.reason == "name-resolution"
    assert str(error).startswith(
        "GET http://nonexistent.invalid/v1/joblib/workers: "
        "cannot resolve host 'nonexistent.invalid'"
    )


def test_tls_against_plain_http_says_so(live_server: LiveServer) -> None:
    url = live_server.url.replace("http://", "https://")

    error = failure(url)

    assert isinstance(error, TransportError)
    assert error.reason == "tls"
    assert str(error).startswith(f"GET {url}/v1/joblib/workers: TLS handshake failed")
    assert "is it a plain-HTTP server? try http://" in str(error)


def test_a_silent_server_times_out_with_the_limit() -> None:
    with silent_port() as url:
        error = failure(url, timeout=0.2)

    assert isinstance(error, TransportError)
    assert error.reason == "timeout"
    assert str(error) == (
        f"GET {url}/v1/joblib/workers: timed out after 0.2 s waiting for the answer"
    )


# the socket


def refusal(url: str, token: str | None) -> TransportError:
    sock = SocketClient(url, token, reconnection=False)
    try:
        with pytest.raises(TransportError) as caught:
            sock.connect()
    finally:
        sock.close()
    return caught.value


def test_a_wrong_token_is_refused_with_the_servers_reason(
    live_server: LiveServer,
) -> None:
    error = refusal(live_server.url, "wrong-token")

    assert error.reason == "rejected"
    assert error.url == live_server.url
    assert str(error).startswith(
        f"socket connection to {live_server.url} refused: unauthorized: "
    )
    assert str(error).endswith("(the server does not accept the token given)")


def test_no_token_is_refused_saying_none_was_given(live_server: LiveServer) -> None:
    error = refusal(live_server.url, None)

    assert error.reason == "rejected"
    assert "refused: unauthorized: " in str(error)
    assert str(error).endswith("(no token was given)")


def test_manager_connect_passes_the_refusal_on(live_server: LiveServer) -> None:
    with pytest.raises(TransportError, match=r"unauthorized: .*token given"):
        JobManager.connect(live_server.url, token="wrong", heartbeat_interval=None)


@pytest.fixture
def capped_server(database_url: str) -> Iterator[LiveServer]:
    """A live server that lets one identity hold a single socket."""
    settings = StandaloneSettings(
        database_url=database_url,
        joblib=make_settings(max_sockets_per_identity=1),
    )
    with serve_in_thread(create_app(settings, TokenAuth(TOKENS))) as server:
        yield server


def test_too_many_connections_is_said(capped_server: LiveServer) -> None:
    first = SocketClient(capped_server.url, ALICE)
    first.connect()
    try:
        error = refusal(capped_server.url, ALICE)
    finally:
        first.close()

    assert error.reason == "rejected"
    assert "refused: too many connections: 'alice' holds 1" in str(error)


def test_an_unreachable_socket_server_names_url_and_reason() -> None:
    url = f"http://127.0.0.1:{free_port()}"

    error = refusal(url, ADMIN)

    assert error.reason == "connection-refused"
    assert str(error).startswith(f"cannot reach {url}: connection refused")


def test_an_unknown_socket_host_says_it_does_not_resolve() -> None:
    error = refusal("http://nonexistent.invalid", ADMIN)

    assert error.reason == "name-resolution"
    assert "cannot reach http://nonexistent.invalid: cannot resolve host" in str(error)


def test_tls_on_the_socket_says_so(live_server: LiveServer) -> None:
    url = live_server.url.replace("http://", "https://")

    error = refusal(url, ADMIN)

    assert error.reason == "tls"
    assert str(error).startswith(f"cannot reach {url}: TLS handshake failed")
