"""The registry every server check module adds its checks to."""

from joblib_conformance.checks import Registry

SERVER_CHECKS = Registry("server")
"""Checks run against a server: groups `core`, `ours`, `results`, `progress`, and
placeholders for later additions."""
