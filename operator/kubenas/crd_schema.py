"""The NeuralArchitectureSearch spec schema of the CRD, derived from the pydantic models.

The NeuralArchitectureSearch spec schema is derived from `kubenas.spec.SearchSpec`, so
a field added there reaches the CRD on regeneration. pydantic's JSON Schema becomes a
structural OpenAPI v3 schema: `$ref`s are inlined (the referring field's description
followed by the model's docstring); `X | None` becomes X with `nullable: true`;
`const` a one-value `enum`; numeric `exclusiveMinimum`/`exclusiveMaximum` OpenAPI 3.0's
boolean form beside `minimum`/`maximum`; `title`s go; `additionalProperties: false`
goes (the API server prunes unknown fields, and kubectl's strict field validation
rejects them); `additionalProperties: true` becomes
`x-kubernetes-preserve-unknown-fields` (the pod template, its containers, `resources`,
which pass through). A field filled by
`default_factory=Model` gets the model's defaults as its `default` (the API server
validates a default, CEL rules included, without nested defaulting, so `{}` would fail
the rules); other factories state their value; `null`
defaults are dropped. Any other JSON Schema construct raises SchemaError rather than
yield a CRD the API server would refuse.

One Kubernetes convention is added: containers must be named, as in any PodSpec
(locally pydantic names an unnamed container `trainer`). Only `metadata.name`'s rules
(a DNS label) are carried from `kubenas.spec.Metadata`: a CRD may restrict nothing
else of metadata. The status schemas and the NASTrial spec are in kubenas.crd_status.

Rules the schema cannot state stay in pydantic; the operator parses every spec with it
and reports a violation as a Failed condition:
- filter heights and widths are odd (macroCNN.filterHeights, filterWidths);
- choice lists are distinct (filterHeights, filterWidths, numFilters, strides.heights,
  strides.widths, nb201Cell.operations);
- depth.maxLayers >= depth.initialLayers (CEL);
- every macroCNN.imageSize >= macroCNN.minFeatureSize (CEL);
- trial.kind Job needs trial.template, Tabular needs trial.tabular (CEL);
- trial.kind Tabular needs searchSpace.type NB201Cell (CEL);
- retrain needs trial.kind Job (CEL).
Those marked CEL are also `x-kubernetes-validations`, so a real API server rejects the
manifest at `kubectl apply`. The per-item rules are not: a CEL rule over an unbounded list risks the API
server's cost budget.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import core_schema

from kubenas import spec as specs


class SchemaError(ValueError):
    """pydantic produced a JSON Schema construct that has no structural OpenAPI form."""


# ---- the spec schema, derived from pydantic ----------------------------------------

# JSON Schema keywords that mean the same in a structural schema.
_KEPT_KEYWORDS = frozenset(
    {
        "type", "enum", "format", "required", "nullable",
        "minimum", "maximum", "multipleOf", "minItems", "maxItems", "uniqueItems", "minLength", "maxLength", "pattern",
    }
)  # fmt: skip

# (where in the spec, CEL rule, message): pydantic's cross-field rules simple enough for
# CEL. The API server applies defaults before validating, so the fields they read exist.
_CEL_RULES = (
    (
        "",
        "self.trial.kind != 'Tabular' || self.searchSpace.type == 'NB201Cell'",
        "trial.kind Tabular scores NB201Cell architectures only",
    ),
    (
        "trial",
        "self.kind != 'Job' || has(self.template)",
        "kind Job needs `template` (a pod template running the trainer)",
    ),
    ("trial", "self.kind != 'Tabular' || has(self.tabular)", "kind Tabular needs `tabular` (path and metric)"),
    ("", "!has(self.retrain) || self.trial.kind == 'Job'",
     "retrain needs trial.kind Job: a table has no trainer to retrain with"),
    (
        "searchSpace.macroCNN",
        "self.imageSize.all(side, side >= self.minFeatureSize)",
        "imageSize is below minFeatureSize: no architecture is valid",
    ),
    ("searchSpace.macroCNN.depth", "self.maxLayers >= self.initialLayers", "maxLayers is below initialLayers"),
)


class _FactoryDefaults(GenerateJsonSchema):
    """States `default_factory` defaults, which pydantic's JSON Schema leaves out."""

    def get_default_value(self, schema: core_schema.WithDefaultSchema) -> Any:
        factory = schema.get("default_factory")
        if factory is None:
            return super().get_default_value(schema)
        if isinstance(factory, type) and issubclass(factory, BaseModel):
            # Stated whole: the API server checks a default against the schema, CEL rules
            # included, without applying the nested defaults first.
            return factory().model_dump(mode="json", by_alias=True, exclude_none=True)
        return factory()


def nas_spec_schema() -> dict:
    """The structural OpenAPI v3 schema of a NeuralArchitectureSearch's `spec`."""
    pydantic_schema = specs.SearchSpec.model_json_schema(
        by_alias=True, mode="validation", schema_generator=_FactoryDefaults
    )
    schema = _structural(pydantic_schema, definitions=pydantic_schema.get("$defs", {}), path="spec")
    _require_container_names(schema)
    for where, rule, message in _CEL_RULES:
        _node(schema, where).setdefault("x-kubernetes-validations", []).append({"rule": rule, "message": message})
    return schema


def _structural(node: dict, *, definitions: dict, path: str) -> dict:
    node = _without_null_union(_inlined(node, definitions=definitions), definitions=definitions, path=path)
    schema: dict = {}
    for keyword, value in node.items():
        schema.update(_translated(keyword, value, definitions=definitions, path=path))
    return schema


def _inlined(node: dict, *, definitions: dict) -> dict:
    """A `$ref` node as its definition, merged with the referring field's own keys."""
    if "$ref" not in node:
        return node
    field_keys = {keyword: value for keyword, value in node.items() if keyword != "$ref"}
    return _merged(definitions[node["$ref"].removeprefix("#/$defs/")], field_keys)


def _merged(model: dict, field_keys: dict) -> dict:
    """A model's schema as a field's: the field's keys (default, nullable) win; its
    description comes first and the model's docstring, when different, follows."""
    descriptions = dict.fromkeys(filter(None, (field_keys.get("description"), model.get("description"))))
    merged = {**model, **field_keys}
    if descriptions:
        merged["description"] = " ".join(descriptions)
    return merged


def _without_null_union(node: dict, *, definitions: dict, path: str) -> dict:
    """`X | None` (pydantic's `anyOf: [X, {type: null}]`) as X with `nullable: true`."""
    if "anyOf" not in node:
        return node
    members = [member for member in node["anyOf"] if member != {"type": "null"}]
    if len(members) != 1 or len(node["anyOf"]) != 2:
        raise SchemaError(f"{path}: only `X | None` unions have a structural form")
    field_keys = {keyword: value for keyword, value in node.items() if keyword != "anyOf"}
    return {**_merged(_inlined(members[0], definitions=definitions), field_keys), "nullable": True}


def _translated(keyword: str, value: Any, *, definitions: dict, path: str) -> dict:
    """One JSON Schema keyword as the structural schema's keywords (none, one or two)."""
    if keyword in _KEPT_KEYWORDS:
        return {keyword: value}
    if keyword in ("title", "$defs"):
        return {}
    if keyword == "description":
        return {keyword: " ".join(value.split())}  # docstrings' line breaks are no paragraphs
    if keyword == "default":
        return {} if value is None else {keyword: value}
    if keyword == "const":
        return {"enum": [value]}
    if keyword == "exclusiveMinimum":
        return {"minimum": value, "exclusiveMinimum": True}
    if keyword == "exclusiveMaximum":
        return {"maximum": value, "exclusiveMaximum": True}
    if keyword == "additionalProperties":
        return _additional_properties(value, definitions=definitions, path=path)
    if keyword == "properties":
        return {
            keyword: {
                name: _structural(child, definitions=definitions, path=f"{path}.{name}")
                for name, child in value.items()
            }
        }
    if keyword == "items":
        return {keyword: _structural(value, definitions=definitions, path=f"{path}[]")}
    raise SchemaError(f"{path}: JSON Schema `{keyword}` has no structural OpenAPI form")


def _additional_properties(value: bool | dict, *, definitions: dict, path: str) -> dict:
    if value is True:
        return {"x-kubernetes-preserve-unknown-fields": True}
    if value is False:
        return {}  # forbidden in structural schemas: the API server prunes unknown fields
    return {"additionalProperties": _structural(value, definitions=definitions, path=f"{path}{{}}")}


def _node(schema: dict, path: str) -> dict:
    """The subschema at a dotted property path ("" is the schema); `name[]` is its items."""
    node = schema
    for step in filter(None, path.split(".")):
        node = node["properties"][step.removesuffix("[]")]
        if step.endswith("[]"):
            node = node["items"]
    return node


def _require_container_names(schema: dict) -> None:
    """Kubernetes requires every container's name; pydantic defaults it to `trainer` locally."""
    container = _node(schema, "trial.template.spec.containers[]")
    container["properties"]["name"].pop("default", None)
    container["required"] = sorted({*container.get("required", []), "name"})


def nas_metadata_schema() -> dict:
    pydantic_schema = specs.Metadata.model_json_schema(by_alias=True, mode="validation")
    name = _structural(pydantic_schema["properties"]["name"], definitions={}, path="metadata.name")
    return {"type": "object", "properties": {"name": name}}
