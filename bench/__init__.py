"""joblib's benchmark: `python -m bench` drives a real server over its wire API.

Every run starts its own servers (uvicorn subprocesses on 127.0.0.1, on a fresh
SQLite file or PostgreSQL database), drives them only through REST (httpx) and
Socket.IO, and prints a table (with PASS/MISS against the targets of issue 7) and
one JSON line. Sections: `http_floor`, `throughput`, `latency`, `disconnect`,
`backlog`; `report` renders the results. See `python -m bench --help`.
"""
