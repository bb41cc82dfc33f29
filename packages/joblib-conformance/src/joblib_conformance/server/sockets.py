"""Checks of the Socket.IO handshake and of trust on `join_job_room`."""

from __future__ import annotations

from contextlib import suppress

from joblib_conformance import expect
from joblib_conformance.checks import CheckFailed
from joblib_conformance.server.events import AVAILABLE, about, join_job
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.server.workers import UNKNOWN
from joblib_conformance.sockets import ConnectionRefused, Peer
from joblib_conformance.target import ServerContext
from joblib_protocol import (
    Forbidden,
    JobResponse,
    JoinJobRoom,
    ProblemType,
    WorkerNotFound,
)

check = SERVER_CHECKS.check


def _refused(peer: Peer) -> str | None:
    """None when the handshake was refused; otherwise what happened."""
    try:
        peer.connect()
    except ConnectionRefused:
        return None
    return "the connection was accepted"


@check(
    "core.socket.auth",
    "the Socket.IO handshake needs a valid Authorization: Bearer token",
)
def _auth_header(ctx: ServerContext) -> None:
    expect.that(ctx.peer().connected, "a connection with a valid token", "refused")
    for peer, what in (
        (ctx.peer(anonymous=True, connect=False), "no credentials"),
        (ctx.peer("not-a-token", connect=False), "a wrong token"),
    ):
        accepted = _refused(peer)
        expect.that(accepted is None, f"a handshake with {what} refused", accepted)


@check(
    "ours.socket.auth-payload",
    'the handshake may carry the token in the auth payload {"token": …} instead',
)
def _auth_payload(ctx: ServerContext) -> None:
    peer = ctx.peer(via="auth")
    expect.that(peer.connected, "a connection with the token in auth", "refused")
    wrong = ctx.peer("not-a-token", via="auth", connect=False)
    accepted = _refused(wrong)
    expect.that(accepted is None, "a wrong token in auth refused", accepted)


def _refusal(ack: object, kind: type[ProblemType] | None) -> bool:
    if not (isinstance(ack, dict) and ack.get("ok") is False):
        return False
    error = ack.get("error")
    if not isinstance(error, dict) or "type" not in error:
        return False
    return kind is None or error["type"] == kind.type_uri()


@check(
    "ours.socket.trust-on-join",
    "join_job_room is refused for another identity's worker, an unknown one, or a "
    "job the worker does not serve; a refused join changes nothing",
)
def _trust_on_join(ctx: ServerContext) -> None:
    room_id = ctx.room()
    theirs = ctx.serving(room_id, rest=ctx.other)
    mine = ctx.serving(room_id)
    peer = ctx.peer()
    cases = [
        (theirs.full_name, theirs.worker_id, Forbidden, "another identity's worker"),
        (theirs.full_name, UNKNOWN, WorkerNotFound, "an unknown worker"),
        (theirs.full_name, mine.worker_id, None, "a job the worker does not serve"),
    ]
    for job_name, worker_id, kind, what in cases:
        ack = peer.call(
            JoinJobRoom.event_name, {"job_name": job_name, "worker_id": worker_id}
        )
        wanted = kind.type_uri() if kind else "a problem"
        expect.that(
            _refusal(ack, kind),
            f'{{"ok": false, "error": {wanted}}} for {what}',
            ack,
        )
    join_job(peer, mine.full_name, mine.worker_id)
    foreign = ctx.submit(room_id, theirs.full_name)
    barrier = ctx.submit(room_id, mine.full_name)
    peer.wait_for(AVAILABLE, about(barrier.id), what="the barrier: its own job's task")
    leaked = [
        e.payload for e in peer.received(AVAILABLE) if about(foreign.id)(e.payload)
    ]
    expect.that(not leaked, "no task_available of the foreign job", leaked)
    peer.close()
    # The closed socket's own worker is cleaned up: once it is, the server has
    # handled the disconnect. (A server that never cleans up is caught by
    # core.disconnect.socket-drop; here the wait just ends.)
    with suppress(CheckFailed):
        expect.eventually(
            lambda: ctx.user.patch(f"/workers/{mine.worker_id}").status_code == 404,
            timeout=ctx.target.disconnect_within,
            expected="the socket's own worker cleaned up",
        )
    expect.status(
        ctx.other.patch(f"/workers/{theirs.worker_id}"), 200, "the foreign worker alive"
    )
    path = f"/rooms/{room_id}/jobs/{theirs.full_name}"
    job = expect.model(expect.status(ctx.other.get(path), 200), JobResponse, "job")
    expect.equal(
        [str(w) for w in job.workers], [theirs.worker_id], "the foreign job's workers"
    )
