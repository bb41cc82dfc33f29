"""Placeholders for the additions the kit does not check yet.

Each is reported as skipped and is not required: a server can claim every
other group today, and these get real checks when their features are part of
the protocol.
"""

from __future__ import annotations

from joblib_conformance.checks import CheckSkipped
from joblib_conformance.server.registry import SERVER_CHECKS
from joblib_conformance.target import ServerContext

LATER = {
    "providers.provider-routes": "providers: data a worker serves to the host",
}


def _placeholder(feature: str) -> None:
    def run(ctx: ServerContext) -> None:
        raise CheckSkipped(f"not in the kit yet: {feature} is a later addition")

    SERVER_CHECKS.check(feature, LATER[feature], required=False)(run)


for _feature in LATER:
    _placeholder(_feature)
