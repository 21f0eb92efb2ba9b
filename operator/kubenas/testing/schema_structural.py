"""`check_structural`: why the API server refuses a CRD version's openAPIV3Schema.

Mirrors apiextensions' structural-schema validation: the invariants of each node, what
junctors (allOf/anyOf/oneOf/not) may say, and structural completeness; the OpenAPI keyword
checks that follow them live in `schema_keywords`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from kubenas.testing.schema_format import INVALID, FieldError, _child, _forbidden, _key, _required
from kubenas.testing.schema_keywords import _openapi_keyword_errors


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
