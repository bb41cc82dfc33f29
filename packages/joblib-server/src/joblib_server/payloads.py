"""Task payloads checked against their job's JSON Schema (Draft 2020-12)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from functools import lru_cache
from itertools import islice
from typing import Any

import jsonschema_rs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError, best_match
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012

from joblib_protocol import InvalidPayload, InvalidSchema
from joblib_server.errors import ProblemError

logger = logging.getLogger("joblib_server")

MAX_ERRORS = 20
"""The most `errors` one 422 lists; the detail says how many there were."""

_SORTED_ERRORS = 1000
"""Errors gathered (and sorted) before the first `MAX_ERRORS` are picked."""

_MAX_MESSAGE = 300
"""Characters of one error's message: jsonschema quotes the offending value."""

_CACHED_SCHEMAS = 256
"""Compiled validators kept, by distinct schema (least recently used go first)."""

# Checks a schema against the 2020-12 meta-schema, with the meta-schema's own
# format checks (a `pattern` must be a regular expression). Payloads are checked
# without format assertions: `format` stays an annotation, as 2020-12 says.
_META = Draft202012Validator(
    Draft202012Validator.META_SCHEMA,
    format_checker=Draft202012Validator.FORMAT_CHECKER,
)


def check_schema(schema: Any) -> None:
    """Raise 422 `invalid-schema` unless `schema` is a valid JSON Schema object."""
    if not isinstance(schema, dict):
        raise _invalid_schema("a job's schema must be a JSON object", [])
    errors = sorted(_META.iter_errors(schema), key=_error_key)
    if errors:
        first = best_match(errors)
        assert first is not None
        raise _invalid_schema(
            f"not a valid JSON Schema (2020-12): {_message(first)}",
            [_entry(("body", "schema"), error) for error in errors[:MAX_ERRORS]],
        )
    unresolvable = _unresolvable_refs(schema)
    if unresolvable:
        _, ref = unresolvable[0]
        raise _invalid_schema(
            f"not a valid JSON Schema: $ref {ref!r} points to nothing in the schema "
            "(remote references are not fetched)",
            [
                {"loc": ["body", "schema", *where], "msg": f"cannot resolve {ref!r}"}
                for where, ref in unresolvable[:MAX_ERRORS]
            ],
        )


def check_payload(
    schema: dict[str, Any],
    payload: dict[str, Any],
    *,
    loc: tuple[str, ...] = ("body", "payload"),
    what: str = "the payload does not match the job's schema",
) -> None:
    """Raise 422 `invalid-payload` unless `payload` matches `schema`.

    Each error's `loc` starts with `loc`: where the payload is in the request.
    """
    if not schema:
        return  # `{}` takes anything: the common case costs nothing
    compiled = _validator(_canonical(schema))
    if compiled is None:
        return
    errors = _errors(compiled, payload)
    if not errors:
        return
    shown = errors[:MAX_ERRORS]
    raise ProblemError(
        InvalidPayload,
        f"{what} ({_count(errors)}): {_where(shown[0])}{_message(shown[0])}",
        errors=[_entry(loc, error) for error in shown],
    )


def check_payloads(
    schema: dict[str, Any],
    payloads: list[dict[str, Any]],
    *,
    loc: tuple[str, ...] = ("body", "payloads"),
) -> None:
    """Raise 422 `invalid-payload` unless every one of `payloads` matches `schema`.

    The schema is looked up once for all of them. Each error's `loc` is `loc`,
    the payload's index, then the path inside it; at most `MAX_ERRORS` are
    listed, from the first payloads that do not match.
    """
    if not schema:
        return
    compiled = _validator(_canonical(schema))
    if compiled is None:
        return
    fast = compiled[0]
    suspects = (
        range(len(payloads))
        if fast is None
        else [i for i, payload in enumerate(payloads) if not fast.is_valid(payload)]
    )
    entries: list[dict[str, Any]] = []
    bad: list[int] = []
    first = ""
    for index in suspects:
        errors = _errors(compiled, payloads[index])
        if not errors:
            continue
        if not bad:
            first = f"payloads[{index}] ({_count(errors)}): "
            first += f"{_where(errors[0])}{_message(errors[0])}"
        bad.append(index)
        room = MAX_ERRORS - len(entries)
        entries += [_entry((*loc, index), error) for error in errors[:room]]
    if bad:
        raise ProblemError(
            InvalidPayload,
            f"{len(bad)} of {len(payloads)} payloads do not match the job's schema, "
            f"so no task was made; the first, {first}",
            errors=entries,
        )


def _errors(
    compiled: tuple[Any, Draft202012Validator], payload: dict[str, Any]
) -> list[ValidationError]:
    """What is wrong with `payload`, sorted; empty when it is valid."""
    fast, validator = compiled
    if fast is not None and fast.is_valid(payload):
        # The common case, a valid payload: ~1 µs in jsonschema-rs against
        # ~150 µs in python-jsonschema, which only lists the errors below.
        return []
    try:
        # jsonschema finds some errors in set order (unknown properties), which
        # changes from one process to the next: sorting a good many of them makes
        # the answer the same every time, short of a payload with thousands.
        errors = list(islice(validator.iter_errors(payload), _SORTED_ERRORS))
    except (Unresolvable, RecursionError) as exc:
        # The schema passed `check_schema` but cannot be applied (a $ref that
        # loops forever or leads nowhere): like an invalid stored schema, it
        # must not block submits.
        logger.warning("a job's schema cannot be applied, payload not checked: %r", exc)
        return []
    errors.sort(key=_error_key)
    return errors


def _count(errors: list[ValidationError]) -> str:
    found = f"{len(errors)}{'+' if len(errors) == _SORTED_ERRORS else ''}"
    count = "1 error" if len(errors) == 1 else f"{found} errors"
    if len(errors) > MAX_ERRORS:
        count += f", the first {MAX_ERRORS} listed"
    return count


def _canonical(schema: dict[str, Any]) -> str:
    return json.dumps(schema, sort_keys=True, separators=(",", ":"))


@lru_cache(maxsize=_CACHED_SCHEMAS)
def _validator(canonical: str) -> tuple[Any, Draft202012Validator] | None:
    """The compiled validators of a schema, or None when the schema is not valid.

    Two of them: jsonschema-rs answers whether a payload is valid (None if it
    cannot compile the schema), python-jsonschema says what is wrong with one
    that is not.

    Built from the canonical text, so equal schemas check payloads (and order
    their errors) alike whatever the order of their keys.
    """
    schema = json.loads(canonical)
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        # Jobs registered before schemas were checked may hold one that is not
        # valid: their submits go through unchecked, as they always did. Logged
        # once while the validator stays cached.
        logger.warning(
            "a job's stored schema is not valid, payloads unchecked: %s", exc.message
        )
        return None
    try:
        fast = jsonschema_rs.Draft202012Validator(schema, validate_formats=False)
    except Exception as exc:  # any schema it cannot take
        logger.debug("jsonschema-rs cannot compile a job's schema: %s", exc)
        fast = None
    return fast, Draft202012Validator(schema)


def _unresolvable_refs(schema: dict[str, Any]) -> list[tuple[list[Any], str]]:
    """The `$ref`s that lead nowhere from the schema's root, with their paths.

    Only a schema without nested `$id`s is looked at: a nested `$id` changes
    what its `$ref`s are relative to, and such a schema is left to the check
    applied at submit time.
    """
    refs = list(_keyword(schema, [], "$ref"))
    if not refs or any(len(path) > 1 for path, _ in _keyword(schema, [], "$id")):
        return []
    resolver = Registry().resolver_with_root(DRAFT202012.create_resource(schema))
    missing: list[tuple[list[Any], str]] = []
    for path, ref in refs:
        try:
            resolver.lookup(ref)
        except Unresolvable:
            missing.append((path, ref))
    return missing


def _keyword(value: Any, path: list[Any], name: str) -> Iterator[tuple[list[Any], str]]:
    """Every string under key `name` in a JSON value, with the path to its object.

    `enum`, `const` and `default` hold data, not schemas, and are not entered.
    """
    if isinstance(value, dict):
        if isinstance(value.get(name), str):
            yield [*path, name], value[name]
        for key, item in value.items():
            if key not in ("enum", "const", "default", "examples"):
                yield from _keyword(item, [*path, key], name)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _keyword(item, [*path, index], name)


def _error_key(error: ValidationError) -> tuple[str, str]:
    return (error.json_path, error.message)


def _message(error: ValidationError) -> str:
    message = error.message
    if len(message) > _MAX_MESSAGE:
        message = message[: _MAX_MESSAGE - 1] + "…"
    return message


def _where(error: ValidationError) -> str:
    return f"at {error.json_path}: " if error.absolute_path else ""


def _entry(loc: tuple[str | int, ...], error: ValidationError) -> dict[str, Any]:
    return {"loc": [*loc, *error.absolute_path], "msg": _message(error)}


def _invalid_schema(detail: str, errors: list[dict[str, Any]]) -> ProblemError:
    if not errors:
        errors = [{"loc": ["body", "schema"], "msg": detail}]
    return ProblemError(InvalidSchema, detail, errors=errors)
