"""zndraw-joblib's call shapes that the worker SDK also accepts, normalized here."""

from __future__ import annotations

import threading


def listen_arguments(
    first: threading.Event | float | None,
    second: float | threading.Event | None,
    default_interval: float,
) -> tuple[threading.Event | None, float]:
    """Return `(stop_event, polling_interval)` from `listen()`'s two arguments.

    Ours come as `(stop_event, polling_interval)`, zndraw-joblib's as
    `(polling_interval, stop_event)`: a number first means the latter.
    """
    stop: object
    interval: object
    if isinstance(first, int | float):
        stop, interval = second, first
    else:
        stop, interval = first, second
    if interval is None:
        interval = default_interval
    if not isinstance(stop, threading.Event | None) or not isinstance(
        interval, int | float
    ):
        raise TypeError("listen() takes a stop event and a polling interval")
    return stop, float(interval)
