"""JobManager: registration, the mapping of jobs, workers and heartbeats."""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import ValidationError
from starlette.testclient import TestClient

from joblib_client import Extension, ForbiddenError, JobLibError, JobManager
from joblib_protocol import DisconnectPolicyRequest, JoinJobRoom
from joblib_server import Settings
from tests.client.conftest import (
    Listener,
    ManagerFactory,
    RecordingTsio,
    RequestCounter,
    auth,
    heartbeat_threads,
    standalone_app,
)
from tests.client.extensions import PrivateJob, Rotate, Select
from tests.support import eventually
from tests.support.servers import serve_in_thread
from tests.support.tokens import ADMIN, ALICE


def test_register_emits_one_join_with_full_name_and_worker(
    make_manager: ManagerFactory,
) -> None:
    tsio = RecordingTsio()
    manager = make_manager(ADMIN, tsio)
    assert manager.worker_id is None

    assert manager.register(Rotate) is Rotate

    assert tsio.events == [
        JoinJobRoom(
            job_name="@global:modifiers:Rotate", worker_id=str(manager.worker_id)
        )
    ]


def test_two_registrations_join_in_order_as_one_worker(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    tsio = RecordingTsio()
    manager = make_manager(ADMIN, tsio)
    manager.register(Rotate)
    manager.register(Select)

    joins = tsio.of(JoinJobRoom)
    assert [join.job_name for join in joins] == [
        "@global:modifiers:Rotate",
        "@global:selections:Select",
    ]
    assert {join.worker_id for join in joins} == {str(manager.worker_id)}
    workers = server.get("/v1/joblib/workers", headers=auth(ADMIN)).json()
    assert workers["total"] == 1
    assert workers["items"][0]["job_count"] == 2


def test_register_in_a_room(make_manager: ManagerFactory) -> None:
    tsio = RecordingTsio()
    manager = make_manager(ALICE, tsio)

    manager.register(PrivateJob, room="my_room")

    assert [join.job_name for join in tsio.of(JoinJobRoom)] == [
        "my_room:modifiers:PrivateJob"
    ]


def test_register_in_global_needs_an_admin(make_manager: ManagerFactory) -> None:
    manager = make_manager(ALICE)
    with pytest.raises(ForbiddenError) as caught:
        manager.register(Rotate)
    assert caught.value.status == 403
    assert len(manager) == 0
    assert manager.worker_id is None


def test_register_as_decorator_with_and_without_arguments(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager(ADMIN)

    @manager.register
    class Plain(Rotate):
        pass

    @manager.register(room="my_room")
    class Roomy(Rotate):
        pass

    assert list(manager) == ["@global:modifiers:Plain", "my_room:modifiers:Roomy"]


def test_register_refuses_what_is_not_an_extension(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager(ADMIN)
    with pytest.raises(TypeError):
        manager.register(int)  # type: ignore[type-var]
    with pytest.raises(TypeError, match="category"):
        manager.register(Extension)


def test_mapping_of_full_names_to_extensions(make_manager: ManagerFactory) -> None:
    manager = make_manager(ADMIN)
    manager.register(Rotate)
    manager.register(Select)

    assert len(manager) == 2
    assert list(manager) == ["@global:modifiers:Rotate", "@global:selections:Select"]
    assert "@global:modifiers:Rotate" in manager
    assert "@global:modifiers:Missing" not in manager
    assert manager["@global:selections:Select"] is Select
    with pytest.raises(KeyError):
        manager["@global:modifiers:Missing"]


def test_create_worker_explicitly_then_register_reuses_it(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager(ADMIN)
    worker_id = manager.create_worker()
    assert manager.worker_id == worker_id
    assert manager.create_worker() == worker_id

    manager.register(Rotate)

    assert manager.worker_id == worker_id


def test_heartbeat_needs_a_worker_and_reports_the_time(
    make_manager: ManagerFactory,
) -> None:
    manager = make_manager(ADMIN)
    with pytest.raises(JobLibError, match="no worker"):
        manager.heartbeat()
    manager.register(Rotate)

    beat = manager.heartbeat()

    assert isinstance(beat, datetime)
    assert manager.last_heartbeat == beat


def _server_heartbeat(server: TestClient, manager: JobManager) -> datetime:
    items = server.get("/v1/joblib/workers", headers=auth(ADMIN)).json()["items"]
    (worker,) = [item for item in items if item["id"] == str(manager.worker_id)]
    return datetime.fromisoformat(worker["last_heartbeat"])


def test_heartbeat_thread_keeps_the_worker_fresh(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    manager = make_manager(ADMIN, heartbeat_interval=0.05)
    manager.register(Rotate)
    registered = _server_heartbeat(server, manager)

    def beat_after_registering() -> datetime | None:
        beat = manager.last_heartbeat
        return beat if beat is not None and beat > registered else None

    eventually(beat_after_registering, what="a heartbeat")

    beat = manager.last_heartbeat
    assert beat is not None
    assert _server_heartbeat(server, manager) >= beat
    manager.disconnect()
    assert manager.last_heartbeat is None


def assert_heartbeats_by_default(manager: JobManager) -> None:
    """The manager heartbeats, often enough for the server's default timeout."""
    # Three beats per timeout: one late beat does not get a live worker swept.
    assert manager.heartbeat_interval is not None
    assert manager.heartbeat_interval * 3 <= Settings().worker_timeout_seconds
    before = heartbeat_threads()
    manager.register(Rotate)
    (thread,) = heartbeat_threads() - before
    manager.close()
    assert not thread.is_alive()


def test_a_manager_built_with_the_constructor_heartbeats_by_default(
    make_manager: ManagerFactory,
) -> None:
    assert_heartbeats_by_default(make_manager(ADMIN))


def test_a_manager_built_with_connect_heartbeats_by_default(
    database_url: str, settings: Settings
) -> None:
    with serve_in_thread(standalone_app(database_url, settings)) as server:
        manager = JobManager.connect(server.url, token=ADMIN, socket=False)
        assert_heartbeats_by_default(manager)


def _policy(server: TestClient, full_name: str) -> dict[str, object]:
    answer = server.get(f"/v1/joblib/rooms/room1/jobs/{full_name}", headers=auth(ADMIN))
    assert answer.status_code == 200, answer.text
    policy: dict[str, object] = answer.json()["on_disconnect"]
    return policy


def test_register_sends_the_disconnect_policy(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    manager = make_manager(ADMIN)
    manager.register(Rotate, on_disconnect={"action": "requeue", "max_attempts": 2})

    @manager.register(on_disconnect=DisconnectPolicyRequest(grace_seconds=30))
    class Graceful(Rotate):
        pass

    assert _policy(server, "@global:modifiers:Rotate") == {
        "action": "requeue",
        "max_attempts": 2,
        "grace_seconds": 0.0,  # the server's default
    }
    assert _policy(server, "@global:modifiers:Graceful") == {
        "action": "fail",
        "max_attempts": 3,
        "grace_seconds": 30.0,
    }


def test_a_bad_disconnect_policy_is_refused_before_any_request(
    make_manager: ManagerFactory, count_requests: RequestCounter
) -> None:
    manager = make_manager(ADMIN)
    with pytest.raises(ValidationError):
        manager.register(Rotate, on_disconnect={"action": "retry"})
    with pytest.raises(ValidationError):
        manager.register(on_disconnect={"max_attempts": 0})
    assert len(count_requests) == 0
    assert len(manager) == 0


def test_a_worker_registered_again_keeps_its_disconnect_policy(
    make_manager: ManagerFactory, server: TestClient
) -> None:
    """The server forgot the worker (and hid its job): the policy comes back too."""
    manager = make_manager(ADMIN)
    manager.register(Rotate, on_disconnect={"action": "requeue"})
    old = manager.worker_id
    removed = server.delete(f"/v1/joblib/workers/{old}", headers=auth(ADMIN))
    assert removed.status_code == 204
    hidden = server.get(
        "/v1/joblib/rooms/room1/jobs/@global:modifiers:Rotate", headers=auth(ADMIN)
    )
    assert hidden.status_code == 404  # revived, a job starts from the defaults

    with Listener(manager, polling_interval=0.05):
        eventually(lambda: manager.worker_id != old, what="a new worker")

    assert _policy(server, "@global:modifiers:Rotate")["action"] == "requeue"
