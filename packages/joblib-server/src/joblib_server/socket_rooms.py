"""Socket.IO room bookkeeping that does not grow with the number of connections.

python-socketio's manager keeps `rooms[namespace][room] = {sid: eio_sid}` and
nothing the other way round, so to disconnect one socket it copies and walks
every room of the namespace. Every connection has a room of its own (its sid)
and every worker one more (`workers:{id}`): with 1,000 workers and 1,000
observers connected each disconnect walked about 3,000 rooms, and a storm of
1,000 disconnects about 3 million. The managers here keep `sid → rooms` as well,
so a disconnect leaves just the socket's own rooms.

`create_socketio_server` uses them; a host that builds its own `AsyncServer` can
pass `client_manager=IndexedManager()` (or `IndexedRedisManager(url)`).
"""

from __future__ import annotations

from typing import Any

import socketio

Key = tuple[Any, str]
"""(namespace, sid)."""


class IndexedManager(socketio.AsyncManager):
    """python-socketio's in-process manager, with each socket's rooms kept."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rooms_of: dict[Key, set[Any]] = {}

    def basic_enter_room(
        self, sid: str, namespace: Any, room: Any, eio_sid: str | None = None
    ) -> None:
        """Enter as python-socketio does, and remember the room for the socket."""
        super().basic_enter_room(sid, namespace, room, eio_sid=eio_sid)
        self.rooms_of.setdefault((namespace, sid), set()).add(room)

    def basic_leave_room(self, sid: str, namespace: Any, room: Any) -> None:
        """Leave as python-socketio does, and forget the room for the socket."""
        super().basic_leave_room(sid, namespace, room)
        rooms = self.rooms_of.get((namespace, sid))
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self.rooms_of[(namespace, sid)]

    def basic_disconnect(self, sid: str, namespace: Any, **kwargs: Any) -> None:
        """python-socketio's `basic_disconnect`, leaving only the socket's rooms."""
        if namespace not in self.rooms:
            return
        for room in list(self.rooms_of.get((namespace, sid), ())):
            self.basic_leave_room(sid, namespace, room)
        self.rooms_of.pop((namespace, sid), None)
        # The rest as in python-socketio 5.x's own.
        self.callbacks.pop(sid, None)
        for pending in (self.pending_connect, self.pending_disconnect):
            sids = pending.get(namespace)
            if sids is not None and sid in sids:
                sids.remove(sid)
                if not sids:
                    del pending[namespace]

    def get_rooms(self, sid: str, namespace: Any) -> list[Any]:
        """The rooms the socket is in (its own sid room included, None not)."""
        return [r for r in self.rooms_of.get((namespace, sid), ()) if r is not None]


class IndexedRedisManager(IndexedManager, socketio.AsyncRedisManager):
    """python-socketio's Redis manager, with each socket's rooms kept."""
