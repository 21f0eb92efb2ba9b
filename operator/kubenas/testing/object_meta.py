"""`validate_object_meta`: the metadata rules every object must meet, and the DNS-1123 name rules.

As k8s.io/apimachinery's ValidateObjectMetaAccessor and its validation helpers
(IsDNS1123Subdomain, IsDNS1123Label, IsQualifiedName, IsValidLabelValue), messages included.
"""

from __future__ import annotations

from typing import Literal

from kubenas.testing.schema_format import INVALID, TOO_LONG, FieldError, _compiled, _required

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
