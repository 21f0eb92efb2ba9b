"""`validate`: how a custom resource violates its schema, as kube-openapi's SchemaValidator says.

The validators run in kube-openapi's order (type, junctors, string, format, number, array,
enum, object); the checks of x-kubernetes-* extensions follow, from `schema_extensions`,
and string formats are judged by `schema_strfmt`.
"""

from __future__ import annotations

from typing import Any

from kubenas.testing.schema_extensions import _embedded_resource_errors, _list_type_value_errors, _walk_structure
from kubenas.testing.schema_format import (
    _NO_FIELD,
    INVALID,
    REQUIRED,
    TOO_LONG,
    TOO_MANY,
    UNSUPPORTED,
    FieldError,
    _child,
    _compiled,
    _field,
    _supported,
    go_float,
    go_json,
    go_quote,
)
from kubenas.testing.schema_strfmt import _format_errors


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
