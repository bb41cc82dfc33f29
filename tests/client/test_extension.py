"""Extensions: category, job name and schema."""

from __future__ import annotations

import pytest

from joblib_client import Category, Extension
from joblib_client.extension import check_extension, job_full_name, job_schema
from tests.client.extensions import Rotate, Select


def test_categories_are_the_wire_values() -> None:
    assert [category.value for category in Category] == [
        "modifiers",
        "selections",
        "analysis",
    ]
    assert Category.MODIFIER == "modifiers"


def test_the_schema_is_the_models_without_the_category() -> None:
    schema = job_schema(Rotate)

    assert schema == Rotate.model_json_schema()
    assert schema["title"] == "Rotate"
    assert set(schema["properties"]) == {"angle"}
    assert "category" not in Rotate.model_fields


def test_the_full_name_is_room_category_and_class_name() -> None:
    assert job_full_name(Rotate, "@global") == "@global:modifiers:Rotate"
    assert job_full_name(Select, "room1") == "room1:selections:Select"


def test_an_extension_validates_its_payload() -> None:
    assert Rotate.model_validate({"angle": "1.5"}).angle == 1.5


def test_only_extensions_with_a_category_can_be_jobs() -> None:
    class NoCategory(Extension):
        pass

    assert check_extension(Rotate) is Rotate
    with pytest.raises(TypeError, match="category"):
        check_extension(NoCategory)
    with pytest.raises(TypeError, match="not a subclass"):
        check_extension(dict)


def test_run_must_be_implemented() -> None:
    class Lazy(Extension):
        category = Category.ANALYSIS

    with pytest.raises(NotImplementedError):
        Lazy().run()
