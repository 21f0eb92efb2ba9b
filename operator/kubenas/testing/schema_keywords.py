"""The OpenAPI keyword checks of a CRD schema, the last part of `check_structural`.

ValidateCustomResourceDefinitionOpenAPISchema: the keywords a CRD schema may not use, or
may use only in some combinations (defaults under apiVersion/kind/metadata, uniqueItems,
x-kubernetes-map-type, x-kubernetes-list-type and its map keys).
"""

from __future__ import annotations

from kubenas.testing.schema_format import (
    _RESOURCE_FIELDS,
    INVALID,
    UNSUPPORTED,
    FieldError,
    _child,
    _forbidden,
    _key,
    _required,
    _supported,
)

_OPENAPI_TYPES = ("array", "boolean", "integer", "number", "object", "string")


def _openapi_keyword_errors(node: dict, *, path: str, meta_default_reason: str | None, root: bool = False) -> list[FieldError]:
    """ValidateCustomResourceDefinitionOpenAPISchema: keywords a CRD schema may not use, or
    may use only in some combinations, walked in the API server's order."""
    errors = _unsupported_keyword_errors(node, path=path, default_reason=meta_default_reason)
    if node.get("uniqueItems"):
        detail = "uniqueItems cannot be set to true since the runtime complexity becomes quadratic"
        errors.append(_forbidden(_child(path, "uniqueItems"), detail))
    extra = node.get("additionalProperties")
    if extra is not None and node.get("properties") and (extra is False or isinstance(extra, dict)):
        detail = "additionalProperties and properties are mutual exclusive"
        errors.append(_forbidden(_child(path, "additionalProperties"), detail))
    if isinstance(extra, dict):
        errors += _openapi_keyword_errors(extra, path=_child(path, "additionalProperties"), meta_default_reason=meta_default_reason)
    for name, prop in (node.get("properties") or {}).items():
        reason = f"in top-level {name}" if root and name in _RESOURCE_FIELDS else meta_default_reason
        errors += _openapi_keyword_errors(prop, path=_key(_child(path, "properties"), name), meta_default_reason=reason)
    if isinstance(node.get("not"), dict):
        errors += _openapi_keyword_errors(node["not"], path=_child(path, "not"), meta_default_reason=meta_default_reason)
    for keyword in ("allOf", "oneOf", "anyOf"):
        for i, branch in enumerate(node.get(keyword) or []):
            errors += _openapi_keyword_errors(branch, path=f"{path}.{keyword}[{i}]", meta_default_reason=meta_default_reason)
    items = node.get("items")
    if isinstance(items, dict):
        errors += _openapi_keyword_errors(items, path=_child(path, "items"), meta_default_reason=meta_default_reason)
    if node.get("x-kubernetes-preserve-unknown-fields") is False:
        errors.append(FieldError(_child(path, "x-kubernetes-preserve-unknown-fields"), INVALID, False, "must be true or undefined"))
    return errors + _map_type_errors(node, path=path) + _list_type_errors(node, path=path)


def _unsupported_keyword_errors(node: dict, *, path: str, default_reason: str | None) -> list[FieldError]:
    """specStandardValidatorV3.validate."""
    errors: list[FieldError] = []
    kind = node.get("type")
    if kind and kind not in _OPENAPI_TYPES:
        errors.append(FieldError(_child(path, "type"), UNSUPPORTED, kind, _supported(_OPENAPI_TYPES)))
    if node.get("default") is not None and default_reason:
        errors.append(_forbidden(_child(path, "default"), f"must not be set {default_reason}"))
    for keyword in ("id", "additionalItems", "patternProperties", "definitions", "dependencies", "$ref"):
        if node.get(keyword):
            errors.append(_forbidden(_child(path, keyword), f"{keyword} is not supported"))
    if kind == "null":
        errors.append(_forbidden(_child(path, "type"), "type cannot be set to null, use nullable as an alternative"))
    if isinstance(node.get("items"), list):
        errors.append(_forbidden(_child(path, "items"), "items must be a schema object and not an array"))
    return errors


def _map_type_errors(node: dict, *, path: str) -> list[FieldError]:
    map_type = node.get("x-kubernetes-map-type")
    if map_type is None:
        return []
    errors = _type_required_errors(node, "object", "x-kubernetes-map-type is specified", path=path)
    if map_type not in ("atomic", "granular"):
        errors.append(FieldError(_child(path, "x-kubernetes-map-type"), UNSUPPORTED, map_type, _supported(("atomic", "granular"))))
    return errors


def _list_type_errors(node: dict, *, path: str) -> list[FieldError]:
    list_type = node.get("x-kubernetes-list-type")
    keys = node.get("x-kubernetes-list-map-keys") or []
    items = node.get("items") if isinstance(node.get("items"), dict) else None
    errors: list[FieldError] = []
    if list_type is not None:
        errors += _type_required_errors(node, "array", "x-kubernetes-list-type is specified", path=path)
        if list_type not in ("atomic", "set", "map"):
            errors.append(FieldError(_child(path, "x-kubernetes-list-type"), UNSUPPORTED, list_type, _supported(("atomic", "set", "map"))))
    keys_need_map = "must be map if x-kubernetes-list-map-keys is non-empty"
    if keys and list_type is None:
        errors.append(_required(_child(path, "x-kubernetes-list-type"), keys_need_map))
    elif keys and list_type != "map":
        errors.append(FieldError(_child(path, "x-kubernetes-list-type"), INVALID, list_type, keys_need_map))
    if list_type == "map":
        errors += _list_map_errors(keys, items, path=path)
    if list_type in ("set", "map") and items is not None:
        errors += _list_item_nullability_errors(list_type, keys, items, path=path)
    return errors


def _list_map_errors(keys: list[str], items: dict | None, *, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if not keys:
        detail = "must not be empty if x-kubernetes-list-type is map"
        errors.append(_required(_child(path, "x-kubernetes-list-map-keys"), detail))
    if items is None:
        errors.append(_required(_child(path, "items"), "must have a schema if x-kubernetes-list-type is map"))
        return errors
    if items.get("type", "") != "object":
        detail = "must be object if parent array's x-kubernetes-list-type is map"
        errors.append(FieldError(_child(_child(path, "items"), "type"), INVALID, items.get("type", ""), detail))
        return errors
    item_properties = items.get("properties") or {}
    for i, key in enumerate(keys):
        if key not in item_properties:
            detail = "entries must all be names of item properties"
            errors.append(FieldError(_child(path, "x-kubernetes-list-map-keys"), INVALID, keys, detail))
        elif item_properties[key].get("type") in ("array", "object"):
            # The API server quotes the items' type here, not the key's.
            field = _child(_key(_child(_child(path, "items"), "properties"), key), "type")
            errors.append(FieldError(field, INVALID, "object", "must be a scalar type if parent array's x-kubernetes-list-type is map"))
        if key in keys[:i]:
            errors.append(FieldError(_child(path, "x-kubernetes-list-map-keys"), INVALID, keys, "must not contain duplicate entries"))
    return errors


def _list_item_nullability_errors(list_type: str, keys: list[str], items: dict, *, path: str) -> list[FieldError]:
    """validateMapListKeysMapSet: set and map items are never null, map keys always present."""
    errors: list[FieldError] = []
    if items.get("nullable"):
        detail = f"cannot be nullable when x-kubernetes-list-type is {list_type}"
        errors.append(_forbidden(_child(_child(path, "items"), "nullable"), detail))
    if list_type != "map":
        return errors
    item_properties = items.get("properties") or {}
    for key in keys:
        if key not in item_properties:
            continue
        key_path = _key(_child(_child(path, "items"), "properties"), key)
        if key not in (items.get("required") or []) and item_properties[key].get("default") is None:
            detail = "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property"
            errors.append(_required(_child(key_path, "default"), detail))
        if item_properties[key].get("nullable"):
            detail = "this property is in x-kubernetes-list-map-keys, so it cannot be nullable"
            errors.append(_forbidden(_child(key_path, "nullable"), detail))
    return errors


def _type_required_errors(node: dict, expected: str, reason: str, *, path: str) -> list[FieldError]:
    kind = node.get("type", "")
    if kind == expected:
        return []
    if not kind:
        return [_required(_child(path, "type"), f"must be {expected} if {reason}")]
    return [FieldError(_child(path, "type"), INVALID, kind, f"must be {expected} if {reason}")]
