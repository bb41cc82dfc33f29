import hashlib

import pytest
from pydantic import ValidationError

from joblib_protocol import (
    MAX_PROVIDER_ERROR,
    ProviderErrorRequest,
    ProviderRegisterRequest,
    canonical_params,
    provider_channel,
    request_hash,
)


def test_canonical_params_sorts_keys_and_is_compact() -> None:
    assert canonical_params({"b": "2", "a": "x y"}) == '{"a":"x y","b":"2"}'


def test_request_hash_is_the_sha256_of_the_canonical_json() -> None:
    expected = hashlib.sha256(b'{"a":"1","b":"2"}').hexdigest()
    assert request_hash({"b": "2", "a": "1"}) == expected
    assert request_hash({}) == hashlib.sha256(b"{}").hexdigest()
    assert request_hash({"a": "1"}) != request_hash({"a": "2"})


def test_provider_channel() -> None:
    assert provider_channel("@global:fs:local") == "providers:@global:fs:local"


def test_register_request_defaults_to_json_results() -> None:
    body = ProviderRegisterRequest.model_validate({"category": "fs", "name": "n"})
    assert body.content_type == "application/json"
    assert body.schema_ == {}
    assert body.worker_id is None


def test_error_report_is_bounded() -> None:
    ProviderErrorRequest(request_hash="h", error="x" * MAX_PROVIDER_ERROR)
    with pytest.raises(ValidationError):
        ProviderErrorRequest(request_hash="h", error="x" * (MAX_PROVIDER_ERROR + 1))
    with pytest.raises(ValidationError):
        ProviderErrorRequest.model_validate({"request_hash": "h", "error": "e", "x": 1})


def test_typed_params_keep_strings_where_the_schema_takes_one() -> None:
    from joblib_protocol import typed_params

    schema = {
        "properties": {
            "frame": {"type": "integer"},
            "label": {"type": "string"},
            "note": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        }
    }
    sent = {"frame": "3", "label": "7", "note": "8", "path": "/data", "ids": "[1,2]"}
    assert typed_params(schema, sent) == {
        "frame": 3,
        "label": "7",
        "note": "8",
        "path": "/data",
        "ids": [1, 2],
    }
