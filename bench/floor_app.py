"""The HTTP floor's server: one trivial Starlette endpoint, served like joblib-server.

`python -m bench.floor_app serve --host H --port P --log-level L` calls
`uvicorn.run(app, host=H, port=P, log_level=L)`, exactly what
`python -m joblib_server.cli serve` does with the real app, so the only difference
the floor measures is the work joblib does per request.
"""

from __future__ import annotations

import argparse

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

FLOOR_PATH = "/floor"


async def floor(request: Request) -> JSONResponse:
    """Answer at once, touching nothing."""
    return JSONResponse({"ok": True})


app = Starlette(routes=[Route(FLOOR_PATH, floor, methods=["GET"])])


def main(argv: list[str] | None = None) -> int:
    """Parse the same `serve` flags as joblib-server's CLI and run uvicorn."""
    import uvicorn

    parser = argparse.ArgumentParser(prog="bench.floor_app")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    uvicorn.run(app, host=args.host, port=args.port, log_level=args.log_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
