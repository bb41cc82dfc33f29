"""The `Extension` base a worker subclasses for each job, and the job categories."""

from __future__ import annotations

from enum import StrEnum
from typing import Any, ClassVar

from pydantic import BaseModel

from joblib_protocol import format_job_name


class Category(StrEnum):
    """The kind of job an extension is; the value is the category on the wire."""

    MODIFIER = "modifiers"
    SELECTION = "selections"
    ANALYSIS = "analysis"


class Extension(BaseModel):
    """A job's parameters as a pydantic model, and the code that runs it.

    The job's name is the class name and its JSON Schema is the model's schema;
    a task's payload is validated into an instance before `run()` is called.
    """

    category: ClassVar[Category]

    def run(self, *args: Any, **kwargs: Any) -> Any:
        """Do the job's work; what it returns is the task's result.

        A subclass declares the arguments it takes: `run(self, **kwargs)`, or
        zndraw-joblib's `run(self, vis, **kwargs)`. `JobManager.run(task, *args,
        **kwargs)` passes `args`, and the job's registered `run_kwargs` updated
        with `kwargs`.

        The result must be JSON-able: a pydantic model, a dataclass, or anything
        `pydantic_core.to_jsonable_python` takes (JSON values, datetimes, UUIDs,
        enums, ...); anything else fails the task. Raising marks the task failed
        with the error text. `joblib_client.current_task()` gives the task being
        run: its progress, and whether it was cancelled.
        """
        raise NotImplementedError(f"{type(self).__name__}.run() is not implemented")


def check_extension(cls: object) -> type[Extension]:
    """Return `cls` if it is an `Extension` subclass with a category, else raise."""
    if not (isinstance(cls, type) and issubclass(cls, Extension)):
        raise TypeError(f"{cls!r} is not a subclass of Extension")
    if cls is Extension or not isinstance(getattr(cls, "category", None), str):
        raise TypeError(f"{cls.__name__} must set `category: ClassVar[Category]`")
    return cls


def job_full_name(cls: type[Extension], room_id: str) -> str:
    """Return the full name `<room_id>:<category>:<ClassName>` of a job."""
    return format_job_name(room_id, str(cls.category), cls.__name__)


def job_schema(cls: type[Extension]) -> dict[str, Any]:
    """Return the JSON Schema the job is registered with."""
    return cls.model_json_schema()
