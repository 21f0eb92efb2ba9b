"""Label and field selectors as the Kubernetes API parses and applies them.

Label selectors: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x,y)`, `a`, `!a`.
Field selectors: `path=value`, `path==value`, `path!=value` over any dotted path of the
object (the real server allows only a few per kind; kubectl uses `metadata.name` and
`involvedObject.*` of events). A missing field compares as the empty string.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from kubenas.testing.contract import ApiError

_LABEL_KEY = r"[A-Za-z0-9][-A-Za-z0-9_./]*"
_SET_REQUIREMENT = re.compile(rf"^\s*({_LABEL_KEY})\s+(in|notin)\s+\(([^)]*)\)\s*$")
_COMPARISON = re.compile(rf"^\s*({_LABEL_KEY})\s*(==|!=|=)\s*([-A-Za-z0-9_.]*)\s*$")
_EXISTENCE = re.compile(rf"^\s*(!?)\s*({_LABEL_KEY})\s*$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelRequirement:
    key: str
    operator: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = frozenset()

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        match self.operator:
            case "=" | "in":
                return present and labels[self.key] in self.values
            case "!=" | "notin":
                return not present or labels[self.key] not in self.values
            case "exists":
                return present
            case _:
                return not present


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelSelector:
    requirements: tuple[LabelRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> LabelSelector:
        requirements = [_parse_label_requirement(part) for part in _split_outside_parentheses(text or "")]
        return cls(requirements=tuple(requirements))

    def matches(self, obj: dict[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(requirement.matches(labels) for requirement in self.requirements)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldRequirement:
    path: tuple[str, ...]
    value: str
    equal: bool

    def matches(self, obj: dict[str, Any]) -> bool:
        return (_field_text(obj, self.path) == self.value) == self.equal


@dataclasses.dataclass(frozen=True, kw_only=True)
class FieldSelector:
    requirements: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, text: str | None) -> FieldSelector:
        requirements = [_parse_field_requirement(part) for part in _split_unescaped_commas(text or "")]
        return cls(requirements=tuple(requirements))

    def matches(self, obj: dict[str, Any]) -> bool:
        return all(requirement.matches(obj) for requirement in self.requirements)

    def exact_name(self) -> str | None:
        """The name that `metadata.name=X` pins, so a lookup can skip scanning."""
        for requirement in self.requirements:
            if requirement.equal and requirement.path == ("metadata", "name"):
                return requirement.value
        return None


def _parse_label_requirement(text: str) -> LabelRequirement:
    if match := _SET_REQUIREMENT.match(text):
        key, operator, values = match.groups()
        return LabelRequirement(
            key=key, operator=operator, values=frozenset(v.strip() for v in values.split(",") if v.strip())
        )
    if match := _COMPARISON.match(text):
        key, operator, value = match.groups()
        return LabelRequirement(key=key, operator="=" if operator == "==" else operator, values=frozenset([value]))
    if match := _EXISTENCE.match(text):
        negated, key = match.groups()
        return LabelRequirement(key=key, operator="!" if negated else "exists")
    raise ApiError(400, "BadRequest", f"unable to parse requirement: found '{text.strip()}', expected a label selector")


def _parse_field_requirement(text: str) -> FieldRequirement:
    for operator in ("!=", "==", "="):
        path, found, value = text.partition(operator)
        if found and path.strip():
            unescaped = re.sub(r"\\(.)", r"\1", value.strip())
            return FieldRequirement(path=tuple(path.strip().split(".")), value=unescaped, equal=operator != "!=")
    raise ApiError(400, "BadRequest", f"invalid selector: '{text}'; can't understand '{text}'")


def _field_text(obj: Any, path: tuple[str, ...]) -> str:
    for part in path:
        obj = obj.get(part) if isinstance(obj, dict) else None
    if obj is None:
        return ""
    if isinstance(obj, bool):
        return "true" if obj else "false"
    return str(obj)


def _split_outside_parentheses(text: str) -> list[str]:
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return [part for part in parts if part.strip()]


def _split_unescaped_commas(text: str) -> list[str]:
    return [part for part in re.split(r"(?<!\\),", text) if part.strip()]
