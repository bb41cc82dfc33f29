"""The JSON Schema pydantic makes for an extension accepts what `submit` sends."""

from __future__ import annotations

import enum
from typing import Any, ClassVar, Literal

import pytest
from pydantic import BaseModel, Field
from starlette.testclient import TestClient

from joblib_client import (
    Category,
    Extension,
    InvalidPayloadError,
    InvalidSchemaError,
    JobManager,
    ValidationFailedError,
)
from joblib_client._http import Rest
from joblib_protocol import JobRegisterRequest, TaskStatus
from tests.client.conftest import InProcessApi, ManagerFactory
from tests.support.tokens import ADMIN, ALICE


class Mode(enum.Enum):
    FAST = "fast"
    EXACT = "exact"


class Atom(BaseModel):
    symbol: str
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    charge: int | None = None


class Relax(Extension):
    """Nested models, an enum, defaults, optional fields and a Literal."""

    category: ClassVar[Category] = Category.MODIFIER

    atoms: list[Atom] = Field(default_factory=list)
    mode: Mode = Mode.FAST
    method: Literal["bfgs", "fire"] = "bfgs"
    steps: int = Field(default=100, ge=1)
    tolerance: float | None = None
    label: str | None = Field(default=None, max_length=20)
    centre: Atom | None = None

    def run(self, **kwargs: Any) -> Any:
        return self.model_dump(mode="json")


SUBMITTED = [
    Relax(),
    Relax(atoms=[Atom(symbol="H"), Atom(symbol="O", position=(1, 2, 3), charge=-2)]),
    Relax(mode=Mode.EXACT, method="fire", steps=1, tolerance=1e-6, label="x"),
    Relax(centre=Atom(symbol="C", charge=None), tolerance=None),
]


@pytest.fixture
def worker(make_manager: ManagerFactory) -> JobManager:
    manager = make_manager(ADMIN, heartbeat_interval=None)
    manager.register(Relax)
    return manager


@pytest.mark.parametrize("extension", SUBMITTED)
def test_the_schema_accepts_every_payload_submit_sends(
    worker: JobManager, make_manager: ManagerFactory, extension: Relax
) -> None:
    submitter = make_manager(ALICE, heartbeat_interval=None)
    task_id = submitter.submit(extension, "room1")

    task = worker.claim()
    assert task is not None
    assert task.id == task_id
    assert task.extension == extension
    assert worker.run(task) == TaskStatus.COMPLETED
    assert submitter.result(task_id, timeout=5) == extension.model_dump(mode="json")


WRONG = [
    ({"mode": "slow"}, ["mode"]),
    ({"method": "newton"}, ["method"]),
    ({"steps": 0}, ["steps"]),
    ({"atoms": [{"position": [0, 0, 0]}]}, ["atoms", 0]),
    ({"centre": {"symbol": 5}}, ["centre"]),
]


@pytest.mark.parametrize(("payload", "where"), WRONG)
def test_a_wrong_payload_sent_raw_is_an_invalid_payload_error(
    worker: JobManager, server: TestClient, payload: dict[str, Any], where: list[Any]
) -> None:
    rest = Rest(InProcessApi(server, ALICE))

    with pytest.raises(InvalidPayloadError) as caught:
        rest.submit_task("room1", "@global:modifiers:Relax", payload)

    assert isinstance(caught.value, ValidationFailedError)
    assert caught.value.status == 422
    # Paths into the request body: where in the payload the error is.
    locations = [error["loc"] for error in caught.value.errors]
    assert ["body", "payload", *where] in [loc[: len(where) + 2] for loc in locations]


def test_a_schema_that_is_not_json_schema_is_an_invalid_schema_error(
    server: TestClient,
) -> None:
    rest = Rest(InProcessApi(server, ADMIN))
    request = JobRegisterRequest.model_validate(
        {"category": "modifiers", "name": "Broken", "schema": {"type": 5}}
    )

    with pytest.raises(InvalidSchemaError) as caught:
        rest.register_job("room1", request)

    assert caught.value.status == 422
