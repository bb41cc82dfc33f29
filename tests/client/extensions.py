"""Extensions the client tests register as jobs."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import field_validator

from joblib_client import Category, Extension


class Rotate(Extension):
    category: ClassVar[Category] = Category.MODIFIER

    angle: float = 0.0

    def run(self, **kwargs: Any) -> None:
        if "seen" in kwargs:
            kwargs["seen"].append(self.angle)


class PrivateJob(Extension):
    category: ClassVar[Category] = Category.MODIFIER

    def run(self, **kwargs: Any) -> None:
        pass


class Select(Extension):
    category: ClassVar[Category] = Category.SELECTION

    indices: list[int] = []

    def run(self, **kwargs: Any) -> None:
        pass


class Explode(Extension):
    category: ClassVar[Category] = Category.ANALYSIS

    def run(self, **kwargs: Any) -> None:
        raise ValueError("boom")


class Picky(Extension):
    """Its JSON Schema takes any angle, its validator no negative one: a payload
    the server accepts can still fail to fit on the worker."""

    category: ClassVar[Category] = Category.MODIFIER

    angle: float = 0.0

    @field_validator("angle")
    @classmethod
    def _not_negative(cls, angle: float) -> float:
        if angle < 0:
            raise ValueError("the angle must not be negative")
        return angle

    def run(self, **kwargs: Any) -> None:
        pass
