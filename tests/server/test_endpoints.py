"""`endpoints`: the quick storable check never passes what the full one refuses."""

from __future__ import annotations

import json

import pytest

from joblib_server.endpoints import MAX_JSON_DEPTH, _surely_storable, _unstorable

NESTED = b"[" * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH
TOO_DEEP = b"[" + NESTED + b"]"

BODIES = [
    (b'{"a": [1, 2.5, {"b": null}], "c": "text"}', True),
    ('{"a": "한국어 ✓ 🚀"}'.encode(), True),  # Hangul starts with \xed too
    (b'{"a": "\\ud83d\\ude80"}', None),  # a pair: fine, but looked at closely
    (b'{"a": "\\\\ud800"}', None),  # an escaped backslash, then text
    (b'{"a": ' + NESTED + b"}", None),  # 101 levels with the object
    (NESTED, True),
    (b'{"a": "\\ud800"}', False),
    (b'{"\\uDFFF": 1}', False),
    (b'{"a": "\xed\xa0\x80"}', False),  # a raw surrogate, passed through
    ('{"a": "\\ud800"}'.encode("utf-16"), False),
    ('{"a": "\ud800"}'.encode("utf-16-le", "surrogatepass"), False),
    (b'{"a": NaN}', False),
    (b'{"a": [[-Infinity]]}', False),
    (b'{"a": 1e400}', False),
    (b'{"a": ' + TOO_DEEP + b"}", False),
    (TOO_DEEP, False),
]


@pytest.mark.parametrize(("raw", "fine"), BODIES)
def test_the_quick_check_agrees_with_the_full_one(
    raw: bytes, fine: bool | None
) -> None:
    data = json.loads(raw)
    surely = _surely_storable(data, raw)
    refused = _unstorable(data)
    if surely:
        assert refused is None
    if fine is not None:
        assert (refused is None) is fine
    if fine is True:
        assert surely, "the quick check should pass this"
