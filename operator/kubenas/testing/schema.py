"""CustomResourceDefinition OpenAPI v3 schemas as kube-apiserver handles them.

Pure functions on JSON dicts, mirroring k8s.io/apiextensions-apiserver and the go-openapi
validator it carries (k8s.io/kube-openapi) down to the wording of their messages, so that
the emulated API server refuses what a real one refuses, and says so the same way:

- `check_structural`: why a CRD version's schema is refused at CRD creation.
- `prune`, `apply_defaults`, `validate`: what a write of a custom resource goes through,
  in that order (the real server prunes and defaults while decoding, then validates).
- `validate_object_meta`: the metadata rules every object must meet.

`x-kubernetes-validations` (CEL rules) are not evaluated: nothing here checks them.

This module is the public face of the schema handling; the work is done in:

- `schema_format`: `FieldError`, its error types, and Go's renderings of values.
- `schema_structural` and `schema_keywords`: `check_structural`.
- `schema_defaults`: `prune` and `apply_defaults`.
- `schema_validate`, with `schema_strfmt` and `schema_extensions`: `validate`.
- `object_meta`: `validate_object_meta` and the DNS-1123 name rules.
"""

from __future__ import annotations

from kubenas.testing.object_meta import dns1123_label_errors, dns1123_subdomain_errors, validate_object_meta
from kubenas.testing.schema_defaults import apply_defaults, prune
from kubenas.testing.schema_format import (
    DUPLICATE,
    FORBIDDEN,
    INVALID,
    REQUIRED,
    TOO_LONG,
    TOO_MANY,
    UNSUPPORTED,
    FieldError,
    go_float,
    go_json,
    go_quote,
    go_value,
)
from kubenas.testing.schema_structural import check_structural
from kubenas.testing.schema_validate import validate

__all__ = [
    "DUPLICATE",
    "FORBIDDEN",
    "INVALID",
    "REQUIRED",
    "TOO_LONG",
    "TOO_MANY",
    "UNSUPPORTED",
    "FieldError",
    "apply_defaults",
    "check_structural",
    "dns1123_label_errors",
    "dns1123_subdomain_errors",
    "go_float",
    "go_json",
    "go_quote",
    "go_value",
    "prune",
    "validate",
    "validate_object_meta",
]
