"""Each package imports on its own and states one version."""

import importlib

import pytest


@pytest.mark.parametrize("name", ["joblib_protocol", "joblib_client", "joblib_server"])
def test_package_imports_with_version(name: str) -> None:
    module = importlib.import_module(name)
    assert module.__version__ == "0.1.0"
    assert sorted(module.__all__) == sorted(set(module.__all__))
