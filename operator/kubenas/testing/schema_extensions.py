"""What `validate` checks after the schema validator: the x-kubernetes-* extensions on values.

Embedded resources name their apiVersion and kind; x-kubernetes-list-type set and map
lists hold no duplicates. Both run as apiextensions' post-schema validators walk.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubenas.testing.schema_format import DUPLICATE, INVALID, FieldError, _child, _key, _required, go_json


def _walk_structure(value: Any, schema: dict | None, path: str, check: Callable[[Any, dict, str], list[FieldError]]) -> list[FieldError]:
    """Run `check` on every value that has a schema, through properties, additionalProperties
    (paths `[key]`) and items, as apiextensions' post-schema validators walk."""
    if schema is None:
        return []
    errors = check(value, schema, path)
    if isinstance(value, dict):
        properties = schema.get("properties") or {}
        extra = schema.get("additionalProperties")
        for key, item in value.items():
            if key in properties:
                errors += _walk_structure(item, properties[key], _child(path, key), check)
            elif isinstance(extra, dict):
                errors += _walk_structure(item, extra, _key(path, key), check)
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _walk_structure(item, schema["items"], f"{path}[{i}]", check)
    return errors


def _embedded_resource_errors(value: Any, schema: dict, path: str) -> list[FieldError]:
    """An embedded resource names its apiVersion and kind."""
    if not (isinstance(value, dict) and schema.get("x-kubernetes-embedded-resource")):
        return []
    errors = [_required(_child(path, name), "must not be empty") for name in ("apiVersion", "kind") if name not in value]
    for name in ("apiVersion", "kind"):
        if name not in value:
            continue
        given = value[name]
        if not isinstance(given, str):
            errors.append(FieldError(_child(path, name), INVALID, given, "must be a string"))
        elif not given:
            errors.append(FieldError(_child(path, name), INVALID, given, "must not be empty"))
        elif name == "apiVersion" and given.count("/") > 1:
            errors.append(FieldError(_child(path, name), INVALID, given, f"unexpected GroupVersion string: {given}"))
    return errors


def _list_type_value_errors(value: Any, schema: dict, path: str) -> list[FieldError]:
    """x-kubernetes-list-type set and map: the second appearance of each repeated element or key."""
    if not isinstance(value, list):
        return []
    list_type = schema.get("x-kubernetes-list-type")
    if list_type == "set":
        return [FieldError(f"{path}[{i}]", DUPLICATE, value[i]) for i in _repeats([_set_identity(item) for item in value])]
    if list_type == "map":
        return _list_map_value_errors(value, schema, path)
    return []


def _set_identity(value: Any) -> Any:
    """Scalars compare with their Go type, compound values by their JSON."""
    return ("json", go_json(value)) if isinstance(value, (dict, list)) else (type(value).__name__, value)


def _repeats(identities: list[Any]) -> list[int]:
    """Indices where a value is seen the second time (once per repeated value)."""
    seen: dict[Any, int] = {}
    repeats = []
    for i, identity in enumerate(identities):
        seen[identity] = seen.get(identity, 0) + 1
        if seen[identity] == 2:
            repeats.append(i)
    return repeats


_NO_KEY = ("unspecified",)


def _list_map_value_errors(value: list, schema: dict, path: str) -> list[FieldError]:
    for i, item in enumerate(value):
        if item is not None and not isinstance(item, dict):
            return [FieldError(f"{path}[{i}]", INVALID, item, "must be an object for an array of list-type map")]
    keys = schema.get("x-kubernetes-list-map-keys") or []
    key_schemas = (schema.get("items") or {}).get("properties") or {}

    def key_identity(item: dict | None) -> tuple:
        if item is None:
            return tuple(_NO_KEY for _ in keys)
        identity = []
        for key in keys:
            if key in item:
                identity.append(_set_identity(item[key]))
            elif key_schemas.get(key, {}).get("default") is not None:
                identity.append(_set_identity(key_schemas[key]["default"]))
            else:
                identity.append(_NO_KEY)
        return tuple(identity)

    repeated = _repeats([key_identity(item) for item in value])
    if len(keys) == 1:
        return [FieldError(f"{path}[{i}]", DUPLICATE, {keys[0]: (value[i] or {}).get(keys[0])}) for i in repeated]
    return [FieldError(f"{path}[{i}]", DUPLICATE, {key: value[i][key] for key in keys if key in (value[i] or {})}) for i in repeated]
