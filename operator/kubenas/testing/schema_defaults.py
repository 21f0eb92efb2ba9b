"""`prune` and `apply_defaults`: what the API server's decoder does to a custom resource
before `validate`, in that order."""

from __future__ import annotations

import copy
from typing import Any

from kubenas.testing.schema_format import _RESOURCE_FIELDS


def prune(obj: dict, schema: dict) -> dict:
    """A copy of the custom resource `obj` without the fields `schema` does not know.

    As the API server's decoder: unknown fields go, except under
    `x-kubernetes-preserve-unknown-fields: true` (known fields there are still pruned
    inside); a resource (the root, and each `x-kubernetes-embedded-resource`) keeps its
    `apiVersion` and `kind` strings and its `metadata` object, left for metadata handling.
    Only unknown fields go, so what is missing from the result is what a real server
    reports as unknown fields; nulls the schema does not allow go in `apply_defaults`.
    """
    pruned = copy.deepcopy(obj)
    _prune(pruned, {**schema, "x-kubernetes-embedded-resource": True})
    return pruned


def _is_resource_field(key: str, value: Any) -> bool:
    return (key in ("apiVersion", "kind") and isinstance(value, str)) or (key == "metadata" and isinstance(value, dict))


def _prune(value: Any, schema: dict | None) -> None:
    if schema is not None and schema.get("x-kubernetes-preserve-unknown-fields") is True:
        _prune_known_fields(value, schema)
    elif isinstance(value, dict):
        if schema is None:  # a map with no schema at all loses every field
            value.clear()
            return
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key in list(value):
            if schema.get("x-kubernetes-embedded-resource") and _is_resource_field(key, value[key]):
                continue
            if key in properties:
                _prune(value[key], properties[key])
            elif extra is not None:
                _prune(value[key], extra if isinstance(extra, dict) else None)
            else:
                del value[key]
    elif isinstance(value, list):
        items = schema.get("items") if schema is not None else None
        for item in value:
            _prune(item, items if isinstance(items, dict) else None)


def _prune_known_fields(value: Any, schema: dict | None) -> None:
    """Under x-kubernetes-preserve-unknown-fields: unknown fields stay, known ones are pruned."""
    if schema is None:
        return
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if schema.get("x-kubernetes-embedded-resource") and key in _RESOURCE_FIELDS:
                continue
            if key in properties:
                _prune(item, properties[key])
            elif extra is not None:
                _prune(item, extra if isinstance(extra, dict) else None)
    elif isinstance(value, list):
        items = schema.get("items")
        for item in value:
            _prune_known_fields(item, items if isinstance(items, dict) else None)


def _drop_nulls_without_defaults(value: Any, schema: dict | None) -> None:
    """PruneNonNullableNullsWithoutDefaults (array items that are null stay)."""
    if schema is None:
        return
    if isinstance(value, dict):
        for key in list(value):
            field_schema = _field_schema(schema, key)
            if field_schema is None:
                continue
            if value[key] is None and field_schema.get("default") is None and not field_schema.get("nullable"):
                del value[key]
            else:
                _drop_nulls_without_defaults(value[key], field_schema)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            _drop_nulls_without_defaults(item, schema["items"])


def _field_schema(schema: dict, key: str) -> dict | None:
    """The schema of an object's field: its property, else additionalProperties."""
    properties = schema.get("properties") or {}
    if key in properties:
        return properties[key]
    extra = schema.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def apply_defaults(obj: dict, schema: dict) -> dict:
    """A copy of `obj` with the schema's `default`s where the parent object exists and the
    field is absent, or null without being `nullable` (structural defaulting): recursively,
    into defaulted values, additionalProperties and array items; null array items and map
    values take their schema's default too.

    First, as the API server's decoder does between pruning and defaulting, fields that are
    null without being `nullable` or having a `default` are removed (so a required one is
    then reported missing, not mistyped); null array items stay.
    """
    defaulted = copy.deepcopy(obj)
    _drop_nulls_without_defaults(defaulted, schema)
    _default(defaulted, schema)
    return defaulted


def _default(value: Any, schema: dict | None) -> None:
    if schema is None:
        return
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        for key, prop in properties.items():
            if prop.get("default") is not None and (key not in value or _is_disallowed_null(value[key], prop)):
                value[key] = copy.deepcopy(prop["default"])
        extra = schema.get("additionalProperties")
        for key in list(value):
            if key in properties:
                _default(value[key], properties[key])
            elif isinstance(extra, dict):
                original = value[key]
                if _is_disallowed_null(original, extra) and extra.get("default") is not None:
                    value[key] = copy.deepcopy(extra["default"])
                _default(original, extra)  # as the API server, which recurses into the value it found
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        items = schema["items"]
        for i, item in enumerate(value):
            if _is_disallowed_null(item, items) and items.get("default") is not None:
                value[i] = copy.deepcopy(items["default"])
            _default(item, items)


def _is_disallowed_null(value: Any, schema: dict) -> bool:
    return value is None and not schema.get("nullable")
