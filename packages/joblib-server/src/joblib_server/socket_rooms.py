"""Socket.IO room bookkeeping that does not grow with the number of connections.

python-socketio's manager keeps `rooms[namespace][room] = {sid: eio_sid}` and
nothing the other way round, so to disconnect one socket it copies and walks
every room of the namespace. Every connection has a room of its own (its sid)
and every worker one more (`workers:{id}`): with 1,000 workers and 1,000
observers connected each disconnect walked about 3,000 rooms, and a storm of
1,000 disconnects about 3 million. The managers here keep `sid → rooms` as well,
so a disconnect leaves just the socket's own rooms.

They also send an event to a room's sockets one after another: python-socketio
starts a task per recipient and waits for them all, so a fan-out to 2,000 sockets
kept 2,000 tasks alive at once, and the garbage collector's young collections,
which run every few hundred allocations and walk every young object alive, made
each event cost more the more sockets there were (64 µs of server CPU per event
delivered at 500 sockets, 126 µs at 2,000; with the collector off, 55 and 46).
Putting a packet in a socket's queue does not block, so nothing waits longer.

`create_socketio_server` uses them; a host that builds its own `AsyncServer` can
pass `client_manager=IndexedManager()` (or `IndexedRedisManager(url)`).
"""

from __future__ import annotations

from typing import Any

import socketio
from engineio import packet as eio_packet
from socketio import packet as sio_packet

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

    async def emit(
        self,
        event: str,
        data: Any,
        namespace: Any,
        room: Any = None,
        skip_sid: Any = None,
        callback: Any = None,
        to: Any = None,
        **kwargs: Any,
    ) -> None:
        """Send to this process's sockets in the room, encoded once, in turn."""
        if callback is not None:  # a packet per recipient: python-socketio's way
            await super().emit(
                event, data, namespace, room, skip_sid, callback, to, **kwargs
            )
            return
        room = to or room
        if namespace not in self.rooms:
            return
        # Arguments as python-socketio takes them: a tuple is several.
        args = list(data) if isinstance(data, tuple) else [] if data is None else [data]
        skip = skip_sid if isinstance(skip_sid, list) else [skip_sid]
        encoded = self.server.packet_class(
            sio_packet.EVENT, namespace=namespace, data=[event, *args]
        ).encode()
        packets = [
            eio_packet.Packet(eio_packet.MESSAGE, part)
            for part in (encoded if isinstance(encoded, list) else [encoded])
        ]
        for sid, eio_sid in self.get_participants(namespace, room):
            if sid not in skip:
                for part in packets:
                    await self.server.eio.send_packet(eio_sid, part)

    def get_rooms(self, sid: str, namespace: Any) -> list[Any]:
        """The rooms the socket is in (its own sid room included, None not)."""
        return [r for r in self.rooms_of.get((namespace, sid), ()) if r is not None]


class IndexedRedisManager(socketio.AsyncRedisManager, IndexedManager):
    """python-socketio's Redis manager, with each socket's rooms kept.

    The Redis manager first, so its `emit` publishes to every process and each
    process's delivery to its own sockets is `IndexedManager.emit`.
    """
