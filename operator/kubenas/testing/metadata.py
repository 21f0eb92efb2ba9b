"""Server-side metadata: what the API server fills in on create and keeps on update, the
metadata rules it enforces (a label value over 63 characters, an upper-case name fail
here as on a real cluster), and the 422 Invalid Status it answers with."""

from __future__ import annotations

import datetime
import json
import random
import uuid
from collections.abc import Sequence
from typing import Any, Protocol

from kubenas.testing.contract import ApiError
from kubenas.testing.registry import ResourceType
from kubenas.testing.schema import FieldError, validate_object_meta

_NAME_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # what the real server draws generateName suffixes from
_GENERATED_SUFFIX = 5
SERVER_FIELDS = (
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "resourceVersion",
    "generation",
)
_CAUSE_REASONS = {
    "Invalid value": "FieldValueInvalid",
    "Required value": "FieldValueRequired",
    "Unsupported value": "FieldValueNotSupported",
    "Duplicate value": "FieldValueDuplicate",
    "Forbidden": "FieldValueForbidden",
    "Too long": "FieldValueTooLong",
    "Too many": "FieldValueTooMany",
    "Internal error": "InternalError",
}


class Problem(Protocol):
    """What a 422 cause is made of: schema.FieldError and the CRD checks' messages."""

    @property
    def field(self) -> str: ...

    @property
    def type(self) -> str: ...


def json_copy(obj: Any) -> Any:
    """A deep copy that also proves the object is JSON (400 otherwise); faster than copy.deepcopy."""
    try:
        return json.loads(json.dumps(obj))
    except (TypeError, ValueError) as error:
        raise ApiError(400, "BadRequest", f"the object is not JSON: {error}") from None


def now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_uid() -> str:
    return str(uuid.uuid4())


def generated_name(prefix: str) -> str:
    prefix = prefix[: 63 - _GENERATED_SUFFIX]
    return prefix + "".join(random.choices(_NAME_ALPHABET, k=_GENERATED_SUFFIX))


def invalid(resource_type: ResourceType, name: str, problems: Sequence[Problem]) -> ApiError:
    """The 422 Invalid Status the real server answers, with one cause per field."""
    texts = [str(problem) for problem in problems]
    summary = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    causes = [
        {
            "reason": _CAUSE_REASONS.get(problem.type, "FieldValueInvalid"),
            "message": str(problem).removeprefix(f"{problem.field}: "),
            "field": problem.field,
        }
        for problem in problems
    ]
    return ApiError(
        422,
        "Invalid",
        f'{resource_type.group_kind} "{name}" is invalid: {summary}',
        details={"name": name, "group": resource_type.group, "kind": resource_type.kind, "causes": causes},
    )


def metadata_problems(resource_type: ResourceType, obj: dict[str, Any]) -> list[FieldError]:
    """The name, label and annotation rules every object must meet (namespace names are DNS labels)."""
    return validate_object_meta(obj, name_rule="label" if resource_type.storage == ("", "namespaces") else "subdomain")


def generation_changed(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Whether anything outside metadata and status changed: what bumps metadata.generation."""
    ignored = ("metadata", "status")
    return {k: v for k, v in old.items() if k not in ignored} != {k: v for k, v in new.items() if k not in ignored}
