"""CustomResourceDefinition OpenAPI v3 schemas as kube-apiserver handles them.

Pure functions on JSON dicts, mirroring k8s.io/apiextensions-apiserver and the go-openapi
validator it carries (k8s.io/kube-openapi) down to the wording of their messages, so that
the emulated API server refuses what a real one refuses, and says so the same way:

- `check_structural`: why a CRD version's schema is refused at CRD creation.
- `prune`, `apply_defaults`, `validate`: what a write of a custom resource goes through,
  in that order (the real server prunes and defaults while decoding, then validates).
- `validate_object_meta`: the metadata rules every object must meet.

`x-kubernetes-validations` (CEL rules) are not evaluated: nothing here checks them.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import ipaddress
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from functools import lru_cache
from typing import Any, Literal

REQUIRED = "Required value"
INVALID = "Invalid value"
UNSUPPORTED = "Unsupported value"
TOO_LONG = "Too long"
TOO_MANY = "Too many"
DUPLICATE = "Duplicate value"
FORBIDDEN = "Forbidden"

# field.Error renders these without the offending value.
_VALUELESS_TYPES = {REQUIRED, FORBIDDEN, TOO_LONG}

# What apiextensions reports for an error with no field: its field path is nil.
_NO_FIELD = "<nil>"


@dataclass(frozen=True)
class FieldError:
    """One violation, as k8s.io/apimachinery's field.Error; `str()` renders it like the API server."""

    field: str
    type: str
    value: Any = dataclasses.field(default=None, hash=False)
    detail: str = ""

    def __str__(self) -> str:
        body = self.type if self.type in _VALUELESS_TYPES else f"{self.type}: {go_value(self.value)}"
        return f"{self.field}: {body}: {self.detail}" if self.detail else f"{self.field}: {body}"


# ---------------------------------------------------------------------------------------
# Go's renderings of values, which the messages quote.


def go_value(value: Any) -> str:
    """A value as field.Error prints it: scalars with %v (strings %q), the rest as JSON."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return go_quote(value)
    return go_json(value)


def go_float(value: float) -> str:
    """Go's %v of a float64: the shortest digits, in exponent form below 1e-4 and from 1e+06."""
    if value == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(value)).normalize().as_tuple()
    mantissa = "".join(map(str, digits))
    power = len(digits) - 1 + int(exponent)
    prefix = "-" if sign else ""
    if power < -4 or power >= 6:
        fraction = f".{mantissa[1:]}" if len(mantissa) > 1 else ""
        return f"{prefix}{mantissa[0]}{fraction}e{'-' if power < 0 else '+'}{abs(power):02d}"
    return prefix + format(abs(Decimal(repr(value))).normalize(), "f")


_GO_ESCAPES = {"\a": "\\a", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t", "\v": "\\v"}


def go_quote(text: str) -> str:
    """Go's %q (strconv.Quote) of a string."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char in _GO_ESCAPES:
            out.append(_GO_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) < 0x80:
            out.append(f"\\x{ord(char):02x}")
        elif ord(char) < 0x10000:
            out.append(f"\\u{ord(char):04x}")
        else:
            out.append(f"\\U{ord(char):08x}")
    out.append('"')
    return "".join(out)


def go_json(value: Any) -> str:
    """encoding/json's compact rendering: sorted keys, integral floats without a fraction."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _go_json_float(value)
    if isinstance(value, str):
        return _go_json_string(value)
    if isinstance(value, list):
        return "[" + ",".join(go_json(item) for item in value) + "]"
    return "{" + ",".join(f"{_go_json_string(key)}:{go_json(item)}" for key, item in sorted(value.items())) + "}"


def _go_json_string(text: str) -> str:
    encoded = json.dumps(text, ensure_ascii=False)
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        encoded = encoded.replace(char, escape)
    return encoded


def _go_json_float(value: float) -> str:
    if value != 0 and (abs(value) < 1e-6 or abs(value) >= 1e21):
        return re.sub(r"e([+-])0(\d)$", r"e\1\2", repr(value))
    text = format(Decimal(repr(value)), "f")
    return text.rstrip("0").rstrip(".") if "." in text else text


# ---------------------------------------------------------------------------------------
# Paths: field.Path renders children with dots, indices and map keys in brackets.


def _child(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _key(path: str, key: str) -> str:
    return f"{path}[{key}]"


def _field(path: str) -> str:
    return path or _NO_FIELD


def _required(field: str, detail: str) -> FieldError:
    return FieldError(field, REQUIRED, detail=detail)


def _forbidden(field: str, detail: str) -> FieldError:
    return FieldError(field, FORBIDDEN, detail=detail)


# ---------------------------------------------------------------------------------------
# check_structural


def check_structural(schema: dict, *, path: str = "spec.versions[0].schema.openAPIV3Schema") -> list[str]:
    """Why the API server refuses `schema` as a CRD version's openAPIV3Schema; [] when it would not.

    Messages carry full field paths: `path` is where the schema sits in the CRD (pass
    `spec.versions[i].schema.openAPIV3Schema` for version i). As the API server: the
    nullable root first, then the structural-schema violations (sorted, and only when the
    schema has no unsupported keyword such as `$ref`, as NewStructural then fails), then
    the OpenAPI keyword checks in schema order. Not checked: whether defaults validate
    against their schema, CEL rules, and the status-subresource root restrictions.
    """
    errors: list[FieldError] = []
    if schema.get("nullable"):
        errors.append(_forbidden(_child(path, "nullable"), "nullable cannot be true at the root"))
    if not any(_has_unsupported_keyword(node) for node in _schema_tree(schema)):
        structural = _invariant_errors(schema, level=_ROOT, path=path) + _completeness_errors(schema, path=path)
        errors += sorted(structural, key=str)
    errors += _openapi_keyword_errors(schema, path=path, meta_default_reason=None, root=True)
    return [str(error) for error in errors]


_ROOT, _ITEM, _FIELD = "root", "item", "field"
_EMPTY_TYPE = {
    _ROOT: "must not be empty at the root",
    _ITEM: "must not be empty for specified array items",
    _FIELD: "must not be empty for specified object fields",
}
_OPENAPI_TYPES = ("array", "boolean", "integer", "number", "object", "string")
_RESOURCE_FIELDS = ("apiVersion", "kind", "metadata")
_INT_OR_STRING_ANY_OF = [{"type": "integer"}, {"type": "string"}]


def _schema_tree(node: dict) -> Iterator[dict]:
    """Every schema inside `node`, itself included, through every keyword that holds one."""
    yield node
    for keyword in ("properties", "patternProperties", "definitions", "dependencies"):
        for child in (node.get(keyword) or {}).values():
            if isinstance(child, dict):
                yield from _schema_tree(child)
    for keyword in ("allOf", "anyOf", "oneOf"):
        for child in node.get(keyword) or []:
            yield from _schema_tree(child)
    items = node.get("items")
    for child in items if isinstance(items, list) else [items]:
        if isinstance(child, dict):
            yield from _schema_tree(child)
    for keyword in ("not", "additionalProperties", "additionalItems"):
        if isinstance(node.get(keyword), dict):
            yield from _schema_tree(node[keyword])


def _has_unsupported_keyword(node: dict) -> bool:
    """What makes apiextensions' NewStructural fail, so that no structural check runs."""
    keywords = ("id", "$schema", "$ref", "definitions", "additionalItems", "patternProperties", "dependencies")
    return any(node.get(keyword) for keyword in keywords) or isinstance(node.get("items"), list)


def _invariant_errors(node: dict, *, level: str, path: str) -> list[FieldError]:
    """validateStructuralInvariants: the structural rules for a node outside junctors."""
    errors: list[FieldError] = []
    kind = node.get("type", "")
    properties = node.get("properties") or {}
    extra = node.get("additionalProperties")
    int_or_string = node.get("x-kubernetes-int-or-string") is True
    preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
    embedded = node.get("x-kubernetes-embedded-resource") is True

    if kind == "array" and node.get("items") is None:
        errors.append(_required(_child(path, "items"), "must be specified"))
    if isinstance(node.get("items"), dict):
        errors += _invariant_errors(node["items"], level=_ITEM, path=_child(path, "items"))
    for name, prop in properties.items():
        errors += _invariant_errors(prop, level=_FIELD, path=_key(_child(path, "properties"), name))
    if extra is not None:
        if level == _ROOT:
            errors.append(_forbidden(_child(path, "additionalProperties"), "must not be used at the root"))
        if isinstance(extra, dict):
            errors += _invariant_errors(extra, level=_FIELD, path=_child(path, "additionalProperties"))
    if int_or_string and preserve:
        field = _child(path, "x-kubernetes-preserve-unknown-fields")
        errors.append(FieldError(field, INVALID, True, "must be false if x-kubernetes-int-or-string is true"))
    if int_or_string and embedded:
        field = _child(path, "x-kubernetes-embedded-resource")
        errors.append(FieldError(field, INVALID, True, "must be false if x-kubernetes-int-or-string is true"))

    # Two int-or-string spellings may carry types inside junctors: anyOf: [integer, string],
    # and the same anyOf as the first allOf.
    skip_any_of = node.get("anyOf") == _INT_OR_STRING_ANY_OF
    all_of = node.get("allOf") or []
    skip_first_all_of_any_of = bool(all_of) and all_of[0].get("anyOf") == _INT_OR_STRING_ANY_OF
    errors += _junctor_errors(
        node, skip_any_of=skip_any_of, skip_first_all_of_any_of=skip_first_all_of_any_of, level=level, path=path
    )

    if embedded and kind != "object":
        if kind:
            errors.append(FieldError(_child(path, "type"), INVALID, kind, "must be object if x-kubernetes-embedded-resource is true"))
        else:
            errors.append(_required(_child(path, "type"), "must be object if x-kubernetes-embedded-resource is true"))
    elif not kind and not int_or_string and not preserve:
        errors.append(_required(_child(path, "type"), _EMPTY_TYPE[level]))
    if embedded and extra is not None:
        detail = "must not be used if x-kubernetes-embedded-resource is set"
        errors.append(_forbidden(_child(path, "additionalProperties"), detail))
    if level == _ROOT and kind and kind != "object":
        errors.append(FieldError(_child(path, "type"), INVALID, kind, "must be object at the root"))
    errors += _resource_field_errors(properties, resource=level == _ROOT or embedded, root=level == _ROOT, path=path)
    if embedded and not preserve and not properties:
        detail = "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields"
        errors.append(_required(_child(path, "properties"), detail))
    return errors


def _resource_field_errors(properties: dict, *, resource: bool, root: bool, path: str) -> list[FieldError]:
    """apiVersion, kind and metadata of a resource (the root or an embedded one) keep their types;
    the root's metadata schema may only restrict name and generateName."""
    errors: list[FieldError] = []
    expected_types = {"kind": "string", "apiVersion": "string", "metadata": "object"}
    for name, expected in expected_types.items():
        if resource and name in properties and properties[name].get("type", "") != expected:
            field = _child(_key(_child(path, "properties"), name), "type")
            errors.append(FieldError(field, INVALID, properties[name].get("type", ""), f"must be {expected}"))
    if root and "metadata" in properties and not _restricts_only_names(properties["metadata"]):
        detail = "must not specify anything other than name and generateName, but metadata is implicitly specified"
        errors.append(_forbidden(_key(_child(path, "properties"), "metadata"), detail))
    return errors


def _restricts_only_names(metadata: dict) -> bool:
    names = set(metadata.get("properties") or {})
    rest = set(metadata) - {"type", "default", "properties", "example", "externalDocs"}
    return not rest and names in (set(), {"name"}, {"generateName"}, {"name", "generateName"})


def _junctor_errors(node: dict, *, skip_any_of: bool, skip_first_all_of_any_of: bool, level: str, path: str) -> list[FieldError]:
    """validateValueValidation: the junctors under a node, and its pattern."""
    errors: list[FieldError] = []
    if not skip_any_of:
        for i, branch in enumerate(node.get("anyOf") or []):
            errors += _nested_errors(branch, skip_any_of=False, level=level, path=f"{path}.anyOf[{i}]")
    for i, branch in enumerate(node.get("allOf") or []):
        errors += _nested_errors(branch, skip_any_of=skip_first_all_of_any_of and i == 0, level=level, path=f"{path}.allOf[{i}]")
    for i, branch in enumerate(node.get("oneOf") or []):
        errors += _nested_errors(branch, skip_any_of=False, level=level, path=f"{path}.oneOf[{i}]")
    if isinstance(node.get("not"), dict):
        errors += _nested_errors(node["not"], skip_any_of=False, level=level, path=_child(path, "not"))
    if node.get("pattern"):
        try:
            re.compile(node["pattern"])
        except re.error as error:
            detail = f"must be a valid regular expression, but isn't: {error}"
            errors.append(FieldError(_child(path, "pattern"), INVALID, node["pattern"], detail))
    return errors


# Inside junctors a schema may only validate values: these keywords say what a value is.
_FORBIDDEN_IN_JUNCTORS: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("type", bool, "must be empty to be structural"),
    ("additionalProperties", lambda value: value is not None, "must be undefined to be structural"),
    ("default", lambda value: value is not None, "must be undefined to be structural"),
    ("title", bool, "must be empty to be structural"),
    ("description", bool, "must be empty to be structural"),
    ("nullable", lambda value: value is True, "must be false to be structural"),
    ("x-kubernetes-preserve-unknown-fields", lambda value: value is True, "must be false to be structural"),
    ("x-kubernetes-embedded-resource", lambda value: value is True, "must be false to be structural"),
    ("x-kubernetes-int-or-string", lambda value: value is True, "must be false to be structural"),
    ("x-kubernetes-list-map-keys", bool, "must be empty to be structural"),
    ("x-kubernetes-list-type", lambda value: value is not None, "must be undefined to be structural"),
)


def _nested_errors(node: dict, *, skip_any_of: bool, level: str, path: str) -> list[FieldError]:
    """validateNestedValueValidation: a schema under allOf/anyOf/oneOf/not."""
    errors = _junctor_errors(node, skip_any_of=skip_any_of, skip_first_all_of_any_of=False, level=level, path=path)
    if isinstance(node.get("items"), dict):
        errors += _nested_errors(node["items"], skip_any_of=False, level=level, path=_child(path, "items"))
    properties = node.get("properties") or {}
    for name, prop in properties.items():
        errors += _nested_errors(prop, skip_any_of=False, level=_FIELD, path=_key(_child(path, "properties"), name))
    for keyword, is_set, detail in _FORBIDDEN_IN_JUNCTORS:
        if is_set(node.get(keyword)):
            errors.append(_forbidden(_child(path, keyword), detail))
    if "metadata" in properties:
        errors.append(_forbidden(_key(_child(path, "properties"), "metadata"), "must not be specified in a nested context"))
    return errors


def _completeness_errors(schema: dict, *, path: str) -> list[FieldError]:
    """validateStructuralCompleteness: what the root's junctors validate must be specified
    outside them too (the API server checks this at the root only)."""
    return _junctor_completeness_errors(schema, schema, schema_path=path, junctor_path=path)


def _junctor_completeness_errors(node: dict, structural: dict, *, schema_path: str, junctor_path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    branches = [("not", node["not"])] if isinstance(node.get("not"), dict) else []
    for keyword in ("allOf", "anyOf", "oneOf"):
        branches += [(f"{keyword}[{i}]", branch) for i, branch in enumerate(node.get(keyword) or [])]
    for name, branch in branches:
        errors += _nested_completeness_errors(branch, structural, schema_path=schema_path, junctor_path=_child(junctor_path, name))
    return errors


def _nested_completeness_errors(node: dict, structural: dict | None, *, schema_path: str, junctor_path: str) -> list[FieldError]:
    if structural is None:
        return [_required(schema_path, f"because it is defined in {junctor_path}")]
    errors = _junctor_completeness_errors(node, structural, schema_path=schema_path, junctor_path=junctor_path)
    if isinstance(node.get("items"), dict):
        items = structural.get("items") if isinstance(structural.get("items"), dict) else None
        errors += _nested_completeness_errors(
            node["items"], items, schema_path=_child(schema_path, "items"), junctor_path=_child(junctor_path, "items")
        )
    known = structural.get("properties") or {}
    for name, prop in (node.get("properties") or {}).items():
        errors += _nested_completeness_errors(
            prop,
            known.get(name),
            schema_path=_key(_child(schema_path, "properties"), name),
            junctor_path=_key(_child(junctor_path, "properties"), name),
        )
    return errors


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


def _supported(values: tuple[str, ...] | list[str]) -> str:
    return "supported values: " + ", ".join(go_quote(value) for value in values)


# ---------------------------------------------------------------------------------------
# prune and apply_defaults


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


# ---------------------------------------------------------------------------------------
# validate


def validate(obj: dict, schema: dict) -> list[FieldError]:
    """Every way `obj` (pruned and defaulted) violates `schema`, as the API server reports a
    custom resource: kube-openapi's schema errors, then embedded-resource errors, then
    x-kubernetes-list-type set/map duplicates. (It puts `validate_object_meta`'s errors first.)

    Mirrored quirks: a type error names the value's JSON type (`Invalid value: "string":
    spec.n in body must be of type integer: "string"`); integral floats pass as integers;
    integer values meet bounds truncated to integers; errors about the whole value of an
    allOf/anyOf/oneOf/not have no field (`<nil>: Invalid value: "": "spec.x" must validate
    ...`). Approximated: of the failing anyOf/oneOf branches, the one reported is the one
    with fewest errors (go-openapi picks by match count). Formats checked: date-time, date,
    byte, uuid, ipv4, ipv6 (others pass); int32/int64 are not range-checked, as upstream.
    Not checked: x-kubernetes-validations (CEL), metadata inside embedded resources.
    """
    errors = _dedupe(_value_errors(obj, schema, ""))
    errors += _walk_structure(obj, schema, "", _embedded_resource_errors)
    errors += _walk_structure(obj, schema, "", _list_type_value_errors)
    return errors


def _dedupe(errors: list[FieldError]) -> list[FieldError]:
    """go-openapi keeps one of identical messages (allOf branches often repeat each other)."""
    seen: set[str] = set()
    unique = []
    for error in errors:
        if str(error) not in seen:
            seen.add(str(error))
            unique.append(error)
    return unique


def _value_errors(value: Any, schema: dict, path: str) -> list[FieldError]:
    """kube-openapi's SchemaValidator: its validators in their order."""
    if value is None:
        return _type_errors(value, schema, path) + _enum_errors(value, schema, path)
    errors = _type_errors(value, schema, path) + _logic_errors(value, schema, path)
    if isinstance(value, str):
        errors += _string_errors(value, schema, path) + _format_errors(value, schema, path)
    if _is_number(value):
        errors += _number_errors(value, schema, path)
    if isinstance(value, list):
        errors += _array_errors(value, schema, path)
    errors += _enum_errors(value, schema, path)
    if isinstance(value, dict):
        errors += _object_errors(value, schema, path)
    return errors


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _json_type(value: Any) -> tuple[str, str]:
    """The JSON type and Go format kube-openapi infers from a decoded value."""
    if isinstance(value, bool):
        return "boolean", ""
    if isinstance(value, int):
        return "integer", "int64"
    if isinstance(value, float):
        return "number", "float64"
    if isinstance(value, str):
        return "string", ""
    if isinstance(value, list):
        return "array", ""
    return "object", ""


def _schema_types(schema: dict) -> list[str]:
    if schema.get("x-kubernetes-int-or-string"):
        return ["integer", "string"]
    return [schema["type"]] if schema.get("type") else []


def _is_json_integer(value: float) -> bool:
    return value.is_integer() and abs(value) <= 2**53


def _invalid_type(path: str, expected: str, found: str) -> FieldError:
    return FieldError(_field(path), INVALID, found, f"{path} in body must be of type {expected}: {go_quote(found)}")


def _type_errors(value: Any, schema: dict, path: str) -> list[FieldError]:
    types = _schema_types(schema)
    fmt = schema.get("format", "")
    if not types and not fmt:
        return []
    if value is None:
        if types and not schema.get("nullable"):
            return [_invalid_type(path, ",".join(types), "null")]
        return []
    found, found_format = _json_type(value)
    float_int = found == "number" and _is_json_integer(value) and "integer" in types
    int_float = found == "integer" and "number" in types
    accepted = found in types or float_int or int_float
    textual = isinstance(value, (str, list))
    if fmt and not textual and not (accepted or found_format == fmt):
        return [_invalid_type(path, fmt, found_format)]
    if fmt and textual and not ("number" in types or "integer" in types):
        return []  # the format validator judges strings with a format
    return [] if accepted else [_invalid_type(path, ",".join(types), found)]


def _schema_wide_error(message: str) -> FieldError:
    """A junctor's verdict on a whole value: apiextensions gives it no field."""
    return FieldError(_NO_FIELD, INVALID, "", message)


def _logic_errors(value: Any, schema: dict, path: str) -> list[FieldError]:
    """anyOf, oneOf, allOf, not: each branch validates the same value at the same path."""
    errors: list[FieldError] = []
    if schema.get("anyOf"):
        results = [_value_errors(value, branch, path) for branch in schema["anyOf"]]
        if all(results):
            errors.append(_schema_wide_error(f"{go_quote(path)} must validate at least one schema (anyOf)"))
            errors += min(results, key=len)
    if schema.get("oneOf"):
        results = [_value_errors(value, branch, path) for branch in schema["oneOf"]]
        valid = sum(1 for result in results if not result)
        if valid != 1:
            found = "Found none valid" if valid == 0 else f"Found {valid} valid alternatives"
            errors.append(_schema_wide_error(f"{go_quote(path)} must validate one and only one schema (oneOf). {found}"))
            if valid == 0:
                errors += min(results, key=len)
    if schema.get("allOf"):
        results = [_value_errors(value, branch, path) for branch in schema["allOf"]]
        for result in results:
            errors += result
        valid = sum(1 for result in results if not result)
        if valid != len(results):
            none = ". None validated" if valid == 0 else ""
            errors.append(_schema_wide_error(f"{go_quote(path)} must validate all the schemas (allOf){none}"))
    if isinstance(schema.get("not"), dict) and not _value_errors(value, schema["not"], path):
        errors.append(_schema_wide_error(f"{go_quote(path)} must not validate the schema (not)"))
    return errors


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)


def _string_errors(value: str, schema: dict, path: str) -> list[FieldError]:
    """One error at most: the first of maxLength, minLength, pattern (lengths in characters)."""
    longest = schema.get("maxLength")
    if longest is not None and len(value) > longest:
        return [FieldError(_field(path), TOO_LONG, value, f"may not be more than {longest} {'byte' if longest == 1 else 'bytes'}")]
    shortest = schema.get("minLength")
    if shortest is not None and len(value) < shortest:
        return [FieldError(_field(path), INVALID, value, f"{path} in body should be at least {shortest} chars long")]
    pattern = schema.get("pattern")
    if pattern and not _compiled(pattern).search(value):
        return [FieldError(_field(path), INVALID, value, f"{path} in body should match '{pattern}'")]
    return []


_DATE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_TIME_OF_DAY = re.compile(r"^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$")
_UUID = re.compile(r"^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$", re.IGNORECASE)
_IPV4 = re.compile(r"^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$")


def _is_date(text: str) -> bool:
    match = _DATE.match(text)
    if not match:
        return False
    try:
        date(*map(int, match.groups()))
    except ValueError:
        return False
    return True


def _is_date_time(text: str) -> bool:
    """strfmt.IsDateTime: a date, a 't', a time of day with a zone."""
    parts = text.lower().split("t")
    if len(text) < 4 or len(parts) < 2 or not _is_date(parts[0]):
        return False
    match = _TIME_OF_DAY.match(parts[1])
    return bool(match) and match[1] <= "23" and match[2] <= "59" and match[3] <= "59"


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except ValueError:
        return False
    return True


def _is_ipv4(text: str) -> bool:
    match = _IPV4.match(text)
    return bool(match) and all(int(octet) <= 255 for octet in match.groups())


def _is_ipv6(text: str) -> bool:
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return False
    return True


_FORMATS: dict[str, Callable[[str], bool]] = {
    "datetime": _is_date_time,
    "date": _is_date,
    "byte": _is_base64,
    "uuid": lambda text: bool(_UUID.match(text)),
    "ipv4": _is_ipv4,
    "ipv6": _is_ipv6,
}


def _format_errors(value: str, schema: dict, path: str) -> list[FieldError]:
    fmt = schema.get("format", "")
    # strfmt knows "date-time", "datetime" and "date_time" as one format.
    check = _FORMATS.get(fmt.lower().replace("-", "").replace("_", ""))
    if check is None or check(value):
        return []
    return [FieldError(_field(path), INVALID, value, f"{path} in body must be of type {fmt}: {go_quote(value)}")]


def _number_errors(value: int | float, schema: dict, path: str) -> list[FieldError]:
    """multipleOf, minimum, maximum; an integer meets bounds truncated to integers, as go-openapi."""
    errors: list[FieldError] = []
    factor = schema.get("multipleOf")
    if factor is not None and not _is_multiple(value, factor):
        shown = str(int(factor)) if isinstance(value, int) and float(factor).is_integer() else go_float(float(factor))
        errors.append(FieldError(_field(path), INVALID, value, f"{path} in body should be a multiple of {shown}"))
    for keyword, exclusive_keyword, below in (("minimum", "exclusiveMinimum", True), ("maximum", "exclusiveMaximum", False)):
        bound = schema.get(keyword)
        if bound is None:
            continue
        bound = int(bound) if isinstance(value, int) else float(bound)
        exclusive = schema.get(exclusive_keyword) is True
        outside = (value < bound or (exclusive and value == bound)) if below else (value > bound or (exclusive and value == bound))
        if outside:
            relation = ("greater than" if below else "less than") + ("" if exclusive else " or equal to")
            shown = str(bound) if isinstance(bound, int) else go_float(bound)
            errors.append(FieldError(_field(path), INVALID, value, f"{path} in body should be {relation} {shown}"))
    return errors


def _is_multiple(value: int | float, factor: float) -> bool:
    if factor <= 0:
        return False
    if isinstance(value, int) and float(factor).is_integer() and factor != 0:
        return value % int(factor) == 0
    quotient = value / factor if factor >= 1 else 1 / factor * value
    nearest = round(quotient)
    return quotient == nearest or abs(quotient - nearest) / (abs(quotient) + abs(nearest)) < 1e-9


def _array_errors(value: list, schema: dict, path: str) -> list[FieldError]:
    errors: list[FieldError] = []
    if isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            errors += _value_errors(item, schema["items"], f"{path}[{i}]")
    fewest, most = schema.get("minItems"), schema.get("maxItems")
    if fewest is not None and len(value) < fewest:
        errors.append(FieldError(_field(path), INVALID, len(value), f"{path} in body should have at least {fewest} items"))
    if most is not None and len(value) > most:
        errors.append(FieldError(_field(path), TOO_MANY, len(value), f"must have at most {most} {'item' if most == 1 else 'items'}"))
    if schema.get("uniqueItems") and len({_identity(item) for item in value}) < len(value):
        errors.append(FieldError(_field(path), INVALID, "", f"{path} in body shouldn't contain duplicates"))
    return errors


def _identity(value: Any) -> Any:
    """A hashable stand-in equal where Go's reflect.DeepEqual is: 1 and 1.0 differ."""
    if isinstance(value, dict):
        return ("object", tuple(sorted((key, _identity(item)) for key, item in value.items())))
    if isinstance(value, list):
        return ("array", tuple(_identity(item) for item in value))
    return (type(value).__name__, value)


def _enum_errors(value: Any, schema: dict, path: str) -> list[FieldError]:
    allowed = schema.get("enum")
    if not allowed or (value is not None and any(_enum_matches(value, option) for option in allowed)):
        return []
    shown = [option if isinstance(option, str) else go_json(option) for option in allowed]
    return [FieldError(_field(path), UNSUPPORTED, value, _supported(shown))]


def _enum_matches(value: Any, option: Any) -> bool:
    """go-openapi converts the value to the option's Go type when it can, then compares."""
    if _is_number(value) and _is_number(option):
        return (int(value) if isinstance(option, int) else float(value)) == option
    if isinstance(option, (bool, str)) or option is None:
        return type(value) is type(option) and value == option
    return _identity(value) == _identity(option)


def _object_errors(value: dict, schema: dict, path: str) -> list[FieldError]:
    count = len(value)
    fewest, most = schema.get("minProperties"), schema.get("maxProperties")
    if fewest is not None and count < fewest:  # go-openapi looks no further into the object
        return [FieldError(_field(path), INVALID, count, f"{path} in body should have at least {fewest} properties")]
    if most is not None and count > most:
        return [FieldError(_field(path), TOO_MANY, count, f"must have at most {most} {'item' if most == 1 else 'items'}")]
    errors: list[FieldError] = []
    properties = schema.get("properties") or {}
    extra = schema.get("additionalProperties")
    for key, item in value.items():
        if key in properties:
            continue
        if extra is False:
            errors.append(FieldError(_field(path), INVALID, key, f"{path}.{key} in body is a forbidden property"))
        elif isinstance(extra, dict):
            errors += _value_errors(item, extra, f"{path}.{key}")
    for name, prop in properties.items():
        if name in value:
            errors += _value_errors(value[name], prop, _child(path, name))
    for name in schema.get("required") or []:
        if name not in value:
            errors.append(FieldError(_child(path, name), REQUIRED))
    return errors


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


# ---------------------------------------------------------------------------------------
# validate_object_meta

_DNS1123_LABEL = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN = _DNS1123_LABEL + r"(\." + _DNS1123_LABEL + ")*"
_QUALIFIED_NAME = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_VALUE = "(" + _QUALIFIED_NAME + ")?"
_SUBDOMAIN_MESSAGE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character"
)
_LABEL_MESSAGE = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character"
)
_QUALIFIED_NAME_MESSAGE = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
_LABEL_VALUE_MESSAGE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_ANNOTATIONS_BYTES = 256 * 1024


def _regex_error(message: str, regex: str, *examples: str) -> str:
    # Go joins examples with " or " after "', ", hence the double space in real messages.
    quoted = "".join(f"'{example}', " if i == 0 else f" or '{example}', " for i, example in enumerate(examples))
    return f"{message} (e.g. {quoted}regex used for validation is '{regex}')"


def _full_match(regex: str, text: str) -> bool:
    return _compiled(regex).fullmatch(text) is not None  # Go's ^...$, where $ never precedes a final newline


def dns1123_subdomain_errors(value: str) -> list[str]:
    """validation.IsDNS1123Subdomain: what is wrong with `value` as a subdomain name."""
    errors = ["must be no more than 253 characters"] if len(value) > 253 else []
    if not _full_match(_DNS1123_SUBDOMAIN, value):
        errors.append(_regex_error(_SUBDOMAIN_MESSAGE, _DNS1123_SUBDOMAIN, "example.com"))
    return errors


def dns1123_label_errors(value: str) -> list[str]:
    """validation.IsDNS1123Label: what is wrong with `value` as a label (namespace names)."""
    errors = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not _full_match(_DNS1123_LABEL, value):
        if _full_match(_DNS1123_SUBDOMAIN, value):
            errors.append("must not contain dots")
        else:
            errors.append(_regex_error(_LABEL_MESSAGE, _DNS1123_LABEL, "my-name", "123-abc"))
    return errors


def _qualified_name_errors(value: str) -> list[str]:
    """validation.IsQualifiedName: label and annotation keys, `[prefix/]name`."""
    parts = value.split("/")
    name_error = _regex_error(_QUALIFIED_NAME_MESSAGE, _QUALIFIED_NAME, "MyName", "my.name", "123-abc")
    if len(parts) > 2:
        return [f"a qualified name {name_error} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"]
    errors: list[str] = []
    if len(parts) == 2:
        prefix = parts[0]
        if prefix:
            errors += [f"prefix part {error}" for error in dns1123_subdomain_errors(prefix)]
        else:
            errors.append("prefix part must be non-empty")
    name = parts[-1]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    if not _full_match(_QUALIFIED_NAME, name):
        errors.append(f"name part {name_error}")
    return errors


def _label_value_errors(value: str) -> list[str]:
    errors = ["must be no more than 63 characters"] if len(value) > 63 else []
    if not _full_match(_LABEL_VALUE, value):
        errors.append(_regex_error(_LABEL_VALUE_MESSAGE, _LABEL_VALUE, "MyValue", "my_value", "12345"))
    return errors


def validate_object_meta(obj: dict, *, name_rule: Literal["subdomain", "label"] = "subdomain") -> list[FieldError]:
    """What the API server finds wrong in any object's metadata (ValidateObjectMetaAccessor):
    the name (`label` for Namespaces, a DNS-1123 subdomain otherwise; generateName checked
    as a prefix), the namespace's syntax when given, label keys and values, annotation keys
    and their 256 KiB total. Run it after generateName has produced the name."""
    metadata = obj.get("metadata") or {}
    name_errors = dns1123_label_errors if name_rule == "label" else dns1123_subdomain_errors
    errors: list[FieldError] = []
    generate_name = metadata.get("generateName") or ""
    if generate_name:
        # A prefix may end in '-': the generated suffix follows it.
        masked = generate_name[:-1] + "a" if len(generate_name) > 1 and generate_name.endswith("-") else generate_name
        errors += [FieldError("metadata.generateName", INVALID, generate_name, message) for message in name_errors(masked)]
    name = metadata.get("name") or ""
    if name:
        errors += [FieldError("metadata.name", INVALID, name, message) for message in name_errors(name)]
    else:
        errors.append(_required("metadata.name", "name or generateName is required"))
    namespace = metadata.get("namespace") or ""
    if namespace:
        errors += [FieldError("metadata.namespace", INVALID, namespace, message) for message in dns1123_label_errors(namespace)]
    for key, value in (metadata.get("labels") or {}).items():
        errors += [FieldError("metadata.labels", INVALID, key, message) for message in _qualified_name_errors(key)]
        errors += [FieldError("metadata.labels", INVALID, value, message) for message in _label_value_errors(value)]
    annotations = metadata.get("annotations") or {}
    for key in annotations:
        errors += [FieldError("metadata.annotations", INVALID, key, message) for message in _qualified_name_errors(key.lower())]
    if sum(len(key.encode()) + len(value.encode()) for key, value in annotations.items()) > _ANNOTATIONS_BYTES:
        errors.append(FieldError("metadata.annotations", TOO_LONG, "", f"may not be more than {_ANNOTATIONS_BYTES} bytes"))
    return errors
