"""Field errors as k8s.io/apimachinery renders them, and the Go renderings they quote.

What every CRD schema check here shares: `FieldError` and its error types, Go's `%v`,
`%q` and encoding/json renderings of values, field.Path's rendering of field paths, and
the few constants and helpers more than one check needs.
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from typing import Any

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
# Shared by the checks: a resource's own fields, the detail of Unsupported value, patterns.

_RESOURCE_FIELDS = ("apiVersion", "kind", "metadata")


def _supported(values: tuple[str, ...] | list[str]) -> str:
    return "supported values: " + ", ".join(go_quote(value) for value in values)


@lru_cache(maxsize=256)
def _compiled(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern)
