"""A `JobManager` worker serving one provider, as the SDK ships it.

`python -m bench.provider_worker URL TOKEN ROOM SIZE`: registers provider
ROOM:bench:blob (`Blob`, `application/octet-stream`) with `JobManager.connect`
(socket on), prints {"provider": <full name>, "worker_id": ...}, and answers reads
until stdin closes (or `LIFETIME_SECONDS` pass). A read of `key=K` answers SIZE
bytes made from K, so every key is a different result.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from typing import Any, ClassVar

from joblib_client import JobManager, Provider

LIFETIME_SECONDS = 600.0


class Blob(Provider):
    """SIZE bytes for `key`."""

    category: ClassVar[str] = "bench"
    content_type: ClassVar[str] = "application/octet-stream"

    key: int = 0

    def read(self, handler: Any) -> bytes:
        size: int = handler
        block = self.key.to_bytes(8, "big", signed=True)
        return (block * (size // 8 + 1))[:size]


def main(argv: list[str]) -> int:
    """Serve until stdin closes."""
    url, token, room, size = argv
    logging.basicConfig(level=logging.ERROR)
    with JobManager.connect(url, token=token) as manager:
        name = manager.register_provider(
            Blob, name="blob", handler=int(size), room=room
        )
        line = {"provider": name, "worker_id": str(manager.worker_id)}
        print(json.dumps(line), flush=True)
        closed = threading.Event()

        def watch_stdin() -> None:
            sys.stdin.read()
            closed.set()

        threading.Thread(target=watch_stdin, daemon=True).start()
        closed.wait(LIFETIME_SECONDS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
