"""CRD schema handling of the emulated API server: messages as a real kube-apiserver writes them."""

from __future__ import annotations

from typing import Any

import pytest

from kubenas.testing.schema import (
    FieldError,
    apply_defaults,
    check_structural,
    go_float,
    go_json,
    go_quote,
    prune,
    validate,
    validate_object_meta,
)

ROOT = "spec.versions[0].schema.openAPIV3Schema"


def spec_schema(**properties: dict) -> dict:
    """A root schema whose `spec` has `properties`."""
    return {"type": "object", "properties": {"spec": {"type": "object", "properties": properties}}}


def messages(spec: dict, schema: dict) -> list[str]:
    return [str(error) for error in validate({"apiVersion": "kubenas.io/v1alpha1", "kind": "K", "spec": spec}, schema)]


def field_messages(value: Any, field_schema: dict) -> list[str]:
    return messages({"f": value}, spec_schema(f=field_schema))


# ---- validate: types -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("schema_type", "accepted", "rejected", "rejected_type"),
    [
        ("string", "x", 1, "integer"),
        ("integer", 3, "3", "string"),
        ("integer", 3.0, 3.5, "number"),  # integral floats are integers to go-openapi
        ("number", 3, True, "boolean"),  # and integers are numbers
        ("boolean", False, "false", "string"),
        ("array", [1], {"a": 1}, "object"),
        ("object", {"a": 1}, [1], "array"),
    ],
)
def test_type_accepts_its_values_and_names_the_type_it_found(schema_type: str, accepted: Any, rejected: Any, rejected_type: str) -> None:
    assert field_messages(accepted, {"type": schema_type}) == []
    assert field_messages(rejected, {"type": schema_type}) == [
        f'spec.f: Invalid value: "{rejected_type}": spec.f in body must be of type {schema_type}: "{rejected_type}"'
    ]


def test_the_briefs_examples_render_exactly() -> None:
    schema = spec_schema(
        maxTrials={"type": "integer"},
        controller={
            "type": "object",
            "properties": {
                "batchSize": {"type": "integer", "minimum": 1},
                "strategy": {"type": "string", "enum": ["reinforce", "random"]},
            },
        },
    )
    schema["properties"]["spec"]["required"] = ["trial"]
    assert messages({"maxTrials": "string", "controller": {"batchSize": 0, "strategy": "foo"}}, schema) == [
        'spec.maxTrials: Invalid value: "string": spec.maxTrials in body must be of type integer: "string"',
        "spec.controller.batchSize: Invalid value: 0: spec.controller.batchSize in body should be greater than or equal to 1",
        'spec.controller.strategy: Unsupported value: "foo": supported values: "reinforce", "random"',
        "spec.trial: Required value",
    ]


def test_null_is_refused_unless_nullable() -> None:
    assert field_messages(None, {"type": "string"}) == ['spec.f: Invalid value: "null": spec.f in body must be of type string: "null"']
    assert field_messages(None, {"type": "string", "nullable": True}) == []


def test_int_or_string_takes_both_and_nothing_else() -> None:
    schema = {"x-kubernetes-int-or-string": True}
    assert field_messages(3, schema) == field_messages("50%", schema) == []
    assert field_messages(True, schema) == ['spec.f: Invalid value: "boolean": spec.f in body must be of type integer,string: "boolean"']


def test_preserve_unknown_fields_without_type_takes_anything() -> None:
    assert field_messages({"any": [1, "two"]}, {"x-kubernetes-preserve-unknown-fields": True}) == []


def test_a_format_at_odds_with_a_non_string_value_is_reported_as_the_format() -> None:
    assert field_messages(2**40, {"type": "integer", "format": "int32"}) == []  # no range check, as go-openapi
    assert field_messages(1.5, {"type": "integer", "format": "int32"}) == [
        'spec.f: Invalid value: "float64": spec.f in body must be of type int32: "float64"'
    ]


# ---- validate: keywords ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field_schema", "value", "expected"),
    [
        ({"type": "integer", "maximum": 10}, 11, "spec.f: Invalid value: 11: spec.f in body should be less than or equal to 10"),
        ({"type": "integer", "minimum": 1, "exclusiveMinimum": True}, 1, "spec.f: Invalid value: 1: spec.f in body should be greater than 1"),
        ({"type": "number", "maximum": 1, "exclusiveMaximum": True}, 1.0, "spec.f: Invalid value: 1: spec.f in body should be less than 1"),
        ({"type": "number", "minimum": 0.5}, 0.25, "spec.f: Invalid value: 0.25: spec.f in body should be greater than or equal to 0.5"),
        ({"type": "number", "maximum": 1e6}, 2.5e6, "spec.f: Invalid value: 2.5e+06: spec.f in body should be less than or equal to 1e+06"),
        ({"type": "integer", "multipleOf": 3}, 10, "spec.f: Invalid value: 10: spec.f in body should be a multiple of 3"),
        ({"type": "number", "multipleOf": 0.1}, 0.25, "spec.f: Invalid value: 0.25: spec.f in body should be a multiple of 0.1"),
        ({"type": "string", "maxLength": 3}, "abcd", "spec.f: Too long: may not be more than 3 bytes"),
        ({"type": "string", "maxLength": 1}, "ab", "spec.f: Too long: may not be more than 1 byte"),
        ({"type": "string", "minLength": 1}, "", 'spec.f: Invalid value: "": spec.f in body should be at least 1 chars long'),
        ({"type": "string", "pattern": "^[a-z]+$"}, "A1", "spec.f: Invalid value: \"A1\": spec.f in body should match '^[a-z]+$'"),
        ({"type": "string", "format": "date-time"}, "yesterday", 'spec.f: Invalid value: "yesterday": spec.f in body must be of type date-time: "yesterday"'),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 1}, [], "spec.f: Invalid value: 0: spec.f in body should have at least 1 items"),
        ({"type": "array", "items": {"type": "integer"}, "maxItems": 2}, [1, 2, 3], "spec.f: Too many: 3: must have at most 2 items"),
        ({"type": "array", "items": {"type": "integer"}, "uniqueItems": True}, [1, 1], 'spec.f: Invalid value: "": spec.f in body shouldn\'t contain duplicates'),
        ({"type": "object", "minProperties": 1}, {}, "spec.f: Invalid value: 0: spec.f in body should have at least 1 properties"),
        ({"type": "object", "maxProperties": 1}, {"a": 1, "b": 2}, "spec.f: Too many: 2: must have at most 1 item"),
        ({"type": "integer", "enum": [1, 2]}, 3, 'spec.f: Unsupported value: 3: supported values: "1", "2"'),
    ],
)
def test_each_keyword_refuses_with_the_api_servers_message(field_schema: dict, value: Any, expected: str) -> None:
    assert field_messages(value, field_schema) == [expected]


@pytest.mark.parametrize(
    ("field_schema", "value"),
    [
        ({"type": "integer", "minimum": 1, "maximum": 10}, 10),
        ({"type": "integer", "multipleOf": 3}, 9),
        ({"type": "number", "multipleOf": 0.1}, 0.3),
        ({"type": "string", "minLength": 1, "maxLength": 3, "pattern": "^[a-z]+$"}, "abc"),
        ({"type": "string", "maxLength": 1}, "é"),  # lengths count characters, not bytes
        ({"type": "string", "format": "date-time"}, "2024-05-01T12:00:00Z"),
        ({"type": "string", "format": "date-time"}, "2024-05-01T12:00:00.5+02:00"),
        ({"type": "string", "format": "uuid"}, "0f8fad5b-d9cb-469f-a165-70867728950e"),
        ({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2, "uniqueItems": True}, [1, 2]),
        ({"type": "integer", "enum": [1, 2]}, 2.0),
        ({"type": "string", "enum": ["reinforce", "random"]}, "random"),
    ],
)
def test_each_keyword_accepts_what_it_allows(field_schema: dict, value: Any) -> None:
    assert field_messages(value, field_schema) == []


def test_only_the_first_string_violation_is_reported() -> None:
    assert field_messages("ABCD", {"type": "string", "maxLength": 3, "pattern": "^[a-z]+$"}) == ["spec.f: Too long: may not be more than 3 bytes"]


def test_array_items_are_validated_at_their_index() -> None:
    schema = spec_schema(
        trial={
            "type": "object",
            "properties": {
                "containers": {
                    "type": "array",
                    "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string", "minLength": 1}}},
                }
            },
        }
    )
    assert messages({"trial": {"containers": [{"name": "a"}, {"name": ""}, {}]}}, schema) == [
        'spec.trial.containers[1].name: Invalid value: "": spec.trial.containers[1].name in body should be at least 1 chars long',
        "spec.trial.containers[2].name: Required value",
    ]


def test_additional_properties_schema_applies_to_every_key() -> None:
    schema = {"type": "object", "additionalProperties": {"type": "integer", "minimum": 0}}
    assert field_messages({"a": 1, "b": -1}, schema) == ["spec.f.b: Invalid value: -1: spec.f.b in body should be greater than or equal to 0"]


def test_additional_properties_false_forbids_unknown_keys() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "additionalProperties": False}
    assert field_messages({"a": 1, "b": 2}, schema) == ['spec.f: Invalid value: "b": spec.f.b in body is a forbidden property']


def test_junctors_report_the_whole_value_without_a_field() -> None:
    any_of = {"type": "object", "anyOf": [{"required": ["a"]}, {"required": ["b"]}]}
    assert field_messages({"a": 1}, any_of) == []
    assert field_messages({}, any_of) == ['<nil>: Invalid value: "": "spec.f" must validate at least one schema (anyOf)', "spec.f.a: Required value"]
    one_of = {"type": "integer", "oneOf": [{"minimum": 0}, {"maximum": 10}]}
    assert field_messages(5, one_of) == ['<nil>: Invalid value: "": "spec.f" must validate one and only one schema (oneOf). Found 2 valid alternatives']
    all_of = {"type": "integer", "allOf": [{"minimum": 0}, {"maximum": 10}]}
    assert field_messages(11, all_of) == [
        "spec.f: Invalid value: 11: spec.f in body should be less than or equal to 10",
        '<nil>: Invalid value: "": "spec.f" must validate all the schemas (allOf)',
    ]
    assert field_messages("x", {"type": "string", "not": {"enum": ["x"]}}) == ['<nil>: Invalid value: "": "spec.f" must not validate the schema (not)']


def test_list_type_set_and_map_refuse_duplicates() -> None:
    tags = {"type": "array", "x-kubernetes-list-type": "set", "items": {"type": "string"}}
    assert field_messages(["a", "b", "a", "a"], tags) == ['spec.f[2]: Duplicate value: "a"']
    ports = {
        "type": "array",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["name"],
        "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}, "port": {"type": "integer"}}},
    }
    assert field_messages([{"name": "a", "port": 1}, {"name": "b"}, {"name": "a", "port": 2}], ports) == ['spec.f[2]: Duplicate value: {"name":"a"}']
    assert field_messages([{"name": "a"}, {"name": "b"}], ports) == []


def test_embedded_resources_name_their_api_version_and_kind() -> None:
    template = {"type": "object", "x-kubernetes-embedded-resource": True, "x-kubernetes-preserve-unknown-fields": True}
    assert field_messages({"apiVersion": "batch/v1", "kind": "Job"}, template) == []
    assert field_messages({"apiVersion": "a/b/c"}, template) == [
        "spec.f.kind: Required value: must not be empty",
        'spec.f.apiVersion: Invalid value: "a/b/c": unexpected GroupVersion string: a/b/c',
    ]


def test_x_kubernetes_validations_are_not_evaluated() -> None:
    assert field_messages(5, {"type": "integer", "x-kubernetes-validations": [{"rule": "self < 3"}]}) == []


def test_field_error_keeps_its_parts_and_is_hashable_even_with_a_compound_value() -> None:
    error = FieldError("spec.f[1]", "Duplicate value", {"name": "a"})
    assert (error.field, error.type, error.value, error.detail) == ("spec.f[1]", "Duplicate value", {"name": "a"}, "")
    assert len({error, FieldError("spec.f[1]", "Duplicate value", {"name": "a"})}) == 1


def test_go_renderings() -> None:
    assert [go_float(x) for x in (0.0, 1.0, 0.5, 123456.0, 1e6, 1e-5, 0.0001, -2.5e-7)] == ["0", "1", "0.5", "123456", "1e+06", "1e-05", "0.0001", "-2.5e-07"]
    assert go_json({"b": 1.0, "a": [1e-7, "<&>", None, True]}) == '{"a":[1e-7,"\\u003c\\u0026\\u003e",null,true],"b":1}'
    assert go_quote('a"b\\c\n\x01é') == '"a\\"b\\\\c\\n\\x01é"'


# ---- apply_defaults ----------------------------------------------------------------------

DEFAULTED = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "properties": {
                "controller": {
                    "type": "object",
                    "default": {},
                    "properties": {"batchSize": {"type": "integer", "default": 8}, "strategy": {"type": "string", "default": "reinforce"}},
                },
                "trials": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"epochs": {"type": "integer", "default": 10}}},
                },
                "note": {"type": "string", "nullable": True, "default": "none"},
                "extra": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        }
    },
}


def test_defaults_fill_absent_fields_recursively_into_defaulted_objects() -> None:
    defaulted = apply_defaults({"spec": {}}, DEFAULTED)
    assert defaulted == {"spec": {"controller": {"batchSize": 8, "strategy": "reinforce"}, "note": "none"}}


def test_defaults_apply_inside_array_items_and_keep_given_values() -> None:
    obj = {"spec": {"controller": {"batchSize": 2}, "trials": [{}, {"epochs": 3}], "note": "given"}}
    defaulted = apply_defaults(obj, DEFAULTED)
    assert defaulted["spec"]["controller"] == {"batchSize": 2, "strategy": "reinforce"}
    assert defaulted["spec"]["trials"] == [{"epochs": 10}, {"epochs": 3}]
    assert defaulted["spec"]["note"] == "given"
    assert obj["spec"]["trials"] == [{}, {"epochs": 3}]  # the input is left alone


def test_null_takes_the_default_unless_the_field_is_nullable() -> None:
    defaulted = apply_defaults({"spec": {"controller": {"batchSize": None}, "note": None}}, DEFAULTED)
    assert defaulted["spec"]["controller"]["batchSize"] == 8
    assert defaulted["spec"]["note"] is None


def test_defaults_leave_preserved_unknown_fields_untouched() -> None:
    extra = {"anything": {"epochs": None}, "list": [None]}
    assert apply_defaults({"spec": {"extra": extra}}, DEFAULTED)["spec"]["extra"] == extra


# ---- prune -------------------------------------------------------------------------------


def test_prune_drops_unknown_fields_and_keeps_the_resource_header() -> None:
    obj = {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NeuralArchitectureSearch",
        "metadata": {"name": "s", "anything": 1},
        "spec": {"controller": {"batchSize": 2, "typo": 3}, "unknown": True},
        "status": {"phase": "Running"},
    }
    assert prune(obj, DEFAULTED) == {
        "apiVersion": "kubenas.io/v1alpha1",
        "kind": "NeuralArchitectureSearch",
        "metadata": {"name": "s", "anything": 1},
        "spec": {"controller": {"batchSize": 2}},
    }
    assert obj["spec"]["unknown"] is True


def test_prune_keeps_what_preserve_unknown_fields_covers_but_prunes_its_known_fields() -> None:
    schema = {
        "type": "object",
        "properties": {
            "spec": {
                "type": "object",
                "x-kubernetes-preserve-unknown-fields": True,
                "properties": {"known": {"type": "object", "properties": {"a": {"type": "integer"}}}},
            }
        },
    }
    obj = {"spec": {"free": {"x": [1, {"y": 2}]}, "known": {"a": 1, "b": 2}}}
    assert prune(obj, schema) == {"spec": {"free": {"x": [1, {"y": 2}]}, "known": {"a": 1}}}


def test_prune_keeps_the_header_of_embedded_resources() -> None:
    schema = spec_schema(template={"type": "object", "x-kubernetes-embedded-resource": True, "properties": {"spec": {"type": "object"}}})
    template = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {}, "status": {}}
    assert prune({"spec": {"template": template}}, schema)["spec"]["template"] == {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "j"}, "spec": {}}


def test_prune_drops_only_unknown_fields_and_defaulting_drops_disallowed_nulls() -> None:
    schema = spec_schema(plain={"type": "integer"}, defaulted={"type": "integer", "default": 1}, nullable={"type": "integer", "nullable": True})
    obj = {"spec": {"plain": None, "defaulted": None, "nullable": None}}
    assert prune(obj, schema) == obj
    assert apply_defaults(obj, schema) == {"spec": {"defaulted": 1, "nullable": None}}
    schema = spec_schema(labels={"type": "object", "additionalProperties": {"type": "string"}}, list={"type": "array", "items": {"type": "string"}})
    assert apply_defaults({"spec": {"labels": {"a": None, "b": "x"}, "list": [None]}}, schema) == {"spec": {"labels": {"b": "x"}, "list": [None]}}


def test_prune_default_validate_in_order_make_a_required_null_missing() -> None:
    schema = spec_schema(name={"type": "string"})
    schema["properties"]["spec"]["required"] = ["name"]
    obj = apply_defaults(prune({"spec": {"name": None}}, schema), schema)
    assert [str(error) for error in validate(obj, schema)] == ["spec.name: Required value"]


# ---- check_structural --------------------------------------------------------------------


def test_a_structural_schema_passes() -> None:
    assert check_structural(DEFAULTED) == []
    int_or_string = {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert check_structural({"type": "object", "properties": {"spec": {"type": "object", "properties": {"n": int_or_string}}}}) == []


def test_missing_types_are_required_per_level() -> None:
    schema = {"properties": {"spec": {"properties": {"list": {"type": "array", "items": {}}}}}}
    assert check_structural(schema) == [
        f"{ROOT}.properties[spec].properties[list].items.type: Required value: must not be empty for specified array items",
        f"{ROOT}.properties[spec].type: Required value: must not be empty for specified object fields",
        f"{ROOT}.type: Required value: must not be empty at the root",
    ]


def test_the_root_is_an_object_without_additional_properties() -> None:
    assert check_structural({"type": "array", "items": {"type": "string"}}) == [f'{ROOT}.type: Invalid value: "array": must be object at the root']
    assert check_structural({"type": "object", "additionalProperties": {"type": "string"}}) == [
        f"{ROOT}.additionalProperties: Forbidden: must not be used at the root"
    ]


def test_arrays_need_items_and_the_path_is_the_callers() -> None:
    assert check_structural(spec_schema(list={"type": "array"}), path="spec.versions[1].schema.openAPIV3Schema") == [
        "spec.versions[1].schema.openAPIV3Schema.properties[spec].properties[list].items: Required value: must be specified"
    ]


def test_ref_is_refused_and_stops_the_structural_checks() -> None:
    assert check_structural({"properties": {"spec": {"$ref": "#/definitions/Spec"}}}) == [
        f"{ROOT}.properties[spec].$ref: Forbidden: $ref is not supported"
    ]


def test_additional_properties_and_properties_are_exclusive() -> None:
    both = {"type": "object", "properties": {"a": {"type": "string"}}, "additionalProperties": {"type": "string"}}
    assert check_structural(spec_schema(both=both)) == [
        f"{ROOT}.properties[spec].properties[both].additionalProperties: Forbidden: additionalProperties and properties are mutual exclusive"
    ]


def test_junctors_may_only_validate_values() -> None:
    schema = spec_schema(n={"type": "integer", "anyOf": [{"type": "integer", "description": "d", "minimum": 1}], "allOf": [{"nullable": True, "default": 1}]})
    path = f"{ROOT}.properties[spec].properties[n]"
    assert check_structural(schema) == [
        f"{path}.allOf[0].default: Forbidden: must be undefined to be structural",
        f"{path}.allOf[0].nullable: Forbidden: must be false to be structural",
        f"{path}.anyOf[0].description: Forbidden: must be empty to be structural",
        f"{path}.anyOf[0].type: Forbidden: must be empty to be structural",
    ]


def test_value_validations_in_root_junctors_need_their_fields_specified() -> None:
    schema = {"type": "object", "properties": {"spec": {"type": "object"}}, "anyOf": [{"properties": {"status": {"required": ["phase"]}}}]}
    assert check_structural(schema) == [f"{ROOT}.properties[status]: Required value: because it is defined in {ROOT}.anyOf[0].properties[status]"]


def test_root_metadata_may_only_restrict_name_and_generate_name() -> None:
    allowed = {"type": "object", "properties": {"metadata": {"type": "object", "properties": {"name": {"type": "string", "maxLength": 63}}}}}
    assert check_structural(allowed) == []
    refused = {"type": "object", "properties": {"metadata": {"type": "object", "properties": {"labels": {"type": "object"}}}}}
    assert check_structural(refused) == [
        f"{ROOT}.properties[metadata]: Forbidden: must not specify anything other than name and generateName, but metadata is implicitly specified"
    ]


def test_keyword_checks_of_crd_schemas() -> None:
    schema = spec_schema(
        tags={"type": "array", "items": {"type": "string"}, "uniqueItems": True},
        kind={"type": "date"},
        ports={
            "type": "array",
            "x-kubernetes-list-type": "map",
            "x-kubernetes-list-map-keys": ["name"],
            "items": {"type": "object", "properties": {"name": {"type": "string"}}},
        },
    )
    path = f"{ROOT}.properties[spec].properties"
    assert check_structural(schema) == [
        f"{path}[tags].uniqueItems: Forbidden: uniqueItems cannot be set to true since the runtime complexity becomes quadratic",
        f'{path}[kind].type: Unsupported value: "date": supported values: "array", "boolean", "integer", "number", "object", "string"',
        f"{path}[ports].items.properties[name].default: Required value: "
        "this property is in x-kubernetes-list-map-keys, so it must have a default or be a required property",
    ]


def test_nullable_root_and_preserve_unknown_false() -> None:
    schema = {"type": "object", "nullable": True, "x-kubernetes-preserve-unknown-fields": False}
    assert check_structural(schema) == [
        f"{ROOT}.nullable: Forbidden: nullable cannot be true at the root",
        f"{ROOT}.x-kubernetes-preserve-unknown-fields: Invalid value: false: must be true or undefined",
    ]


def test_embedded_resources_are_objects_with_properties_or_preserved_fields() -> None:
    assert check_structural(spec_schema(template={"x-kubernetes-embedded-resource": True})) == [
        f"{ROOT}.properties[spec].properties[template].properties: Required value: "
        "must not be empty if x-kubernetes-embedded-resource is true without x-kubernetes-preserve-unknown-fields",
        f"{ROOT}.properties[spec].properties[template].type: Required value: must be object if x-kubernetes-embedded-resource is true",
    ]


# ---- validate_object_meta ------------------------------------------------------------------


def meta_messages(metadata: dict, **options: Any) -> list[str]:
    return [str(error) for error in validate_object_meta({"metadata": metadata}, **options)]


def test_names_are_dns_subdomains() -> None:
    assert meta_messages({"name": "search-1.kubenas"}) == []
    assert meta_messages({"name": "Bad_Name"}) == [
        "metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
        "'-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
    ]
    assert meta_messages({"name": "a" * 254}) == [f'metadata.name: Invalid value: "{"a" * 254}": must be no more than 253 characters']
    assert meta_messages({}) == ["metadata.name: Required value: name or generateName is required"]


def test_namespace_names_are_dns_labels() -> None:
    assert meta_messages({"name": "a.b"}, name_rule="label") == ['metadata.name: Invalid value: "a.b": must not contain dots']
    assert meta_messages({"name": "ok", "namespace": "Team"})[0].startswith(
        'metadata.namespace: Invalid value: "Team": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or \'-\''
    )


def test_generate_name_is_checked_as_a_prefix() -> None:
    assert meta_messages({"generateName": "trial-", "name": "trial-x7k2p"}) == []
    refused = meta_messages({"generateName": "Trial-", "name": "trial-x"})
    assert refused[0].startswith('metadata.generateName: Invalid value: "Trial-": a lowercase RFC 1123 subdomain')


def test_labels_and_annotations() -> None:
    assert meta_messages({"name": "a", "labels": {"kubenas.io/search": "s-1"}, "annotations": {"Example.com/Note": "anything at all"}}) == []
    assert meta_messages({"name": "a", "labels": {"bad key!": "bad value!"}}) == [
        "metadata.labels: Invalid value: \"bad key!\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start "
        "and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
        "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')",
        "metadata.labels: Invalid value: \"bad value!\": a valid label must be an empty string or consist of alphanumeric characters, "
        "'-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex "
        "used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')",
    ]
    assert meta_messages({"name": "a", "annotations": {"big": "x" * 262144}}) == ["metadata.annotations: Too long: may not be more than 262144 bytes"]
