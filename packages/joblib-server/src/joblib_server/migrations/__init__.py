"""joblib's schema history: one Alembic revision per change, in `versions/`.

`joblib_server.schema` runs them; nothing here runs on import. The history is one
line, forward only: each revision names the one before it in `down_revision` and
has an `upgrade()` written by hand with `alembic.op`. To change a table, edit
`tables.py` and add the next file here (`0002_<what>.py`, `revision = "0002"`,
`down_revision = "0001"`); tests/server/test_migrations.py fails until the
upgraded database and `tables.METADATA` agree again.
"""
