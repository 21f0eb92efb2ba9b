"""The PATCH flavours of the Kubernetes API, applied to plain JSON objects.

- JSON merge patch (RFC 7386): dicts merge, null deletes, everything else replaces.
- JSON patch (RFC 6902): add/remove/replace/move/copy/test; a failed op is a 422.
- Strategic merge patch: merge semantics, but the well-known lists of the built-in
  kinds merge by their key (containers and env by `name`...), finalizers are a set
  union, and the `$patch`, `$setElementOrder`, `$retainKeys` and
  `$deleteFromPrimitiveList` directives that `kubectl apply` sends are honoured.
"""

from __future__ import annotations

import copy
from typing import Any

from kubenas.testing.contract import ApiError

# Lists that the built-in types declare `patchStrategy: merge` for, by field name.
# "ports" depends on its owner (containerPort in containers, port in services).
LIST_MERGE_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "volumeDevices": ("devicePath",),
    "imagePullSecrets": ("name",),
    "hostAliases": ("ip",),
    "conditions": ("type",),
    "ownerReferences": ("uid",),
    "ports": ("containerPort", "port"),
    "resourceClaims": ("name",),
    "topologySpreadConstraints": ("topologyKey",),
}
SET_LISTS = {"finalizers"}  # primitive lists merged as sets


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: Any, operations: Any) -> Any:
    if not isinstance(operations, list):
        raise ApiError(400, "BadRequest", "json: cannot unmarshal object into Go value of type jsonpatch.Patch")
    document = copy.deepcopy(target)
    for operation in operations:
        document = _apply_operation(document, operation)
    return document


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    return _strategic_merge(target, patch)


def _strategic_merge(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    if patch.get("$patch") == "replace":
        return {key: copy.deepcopy(value) for key, value in patch.items() if key != "$patch"}
    if patch.get("$patch") == "delete":
        return None
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if key.startswith("$setElementOrder/") or key == "$patch":
            continue  # element order is cosmetic here
        if key == "$retainKeys":
            result = {k: v for k, v in result.items() if k in value or k in patch}
        elif key.startswith("$deleteFromPrimitiveList/"):
            field = key.partition("/")[2]
            result[field] = [item for item in result.get(field) or [] if item not in value]
        elif value is None:
            result.pop(key, None)
        elif isinstance(value, list):
            result[key] = _merge_list(key, result.get(key), value)
        else:
            merged = _strategic_merge(result.get(key), value)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
    return result


def _merge_list(field: str, current: Any, patch: list[Any]) -> list[Any]:
    if any(isinstance(item, dict) and item.get("$patch") == "replace" for item in patch):
        return [copy.deepcopy(item) for item in patch if not (isinstance(item, dict) and "$patch" in item)]
    current = current if isinstance(current, list) else []
    if field in SET_LISTS:
        return current + [item for item in patch if item not in current]
    merge_key = _merge_key(field, patch + current)
    if merge_key is None:
        return copy.deepcopy(patch)
    result = [copy.deepcopy(item) for item in current]
    for item in patch:
        position = next(
            (i for i, old in enumerate(result) if isinstance(old, dict) and old.get(merge_key) == item.get(merge_key)), None
        )
        if item.get("$patch") == "delete":
            if position is not None:
                del result[position]
        elif position is None:
            result.append(_strategic_merge({}, item))
        else:
            result[position] = _strategic_merge(result[position], item)
    return result


def _merge_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(item, dict) for item in items):
        return None
    for key in LIST_MERGE_KEYS.get(field, ()):
        if all(key in item for item in items):
            return key
    return None


def _apply_operation(document: Any, operation: Any) -> Any:
    if not isinstance(operation, dict) or "op" not in operation or "path" not in operation:
        raise ApiError(400, "BadRequest", f"invalid JSON patch operation: {operation!r}")
    op, path = operation["op"], operation["path"]
    match op:
        case "add":
            return _put(document, path, copy.deepcopy(_required_value(operation)), insert=True)
        case "replace":
            _get(document, path)  # the target must exist
            return _put(document, path, copy.deepcopy(_required_value(operation)), insert=False)
        case "remove":
            return _remove(document, path)
        case "move":
            value = _get(document, operation.get("from", ""))
            return _put(_remove(document, operation.get("from", "")), path, value, insert=True)
        case "copy":
            return _put(document, path, copy.deepcopy(_get(document, operation.get("from", ""))), insert=True)
        case "test":
            found = _get(document, path)
            if found != operation.get("value"):
                raise ApiError(
                    422, "Invalid", f"testing value {path} failed: expected {operation.get('value')!r}, found {found!r}"
                )
            return document
    raise ApiError(400, "BadRequest", f"unexpected JSON patch operation: {op!r}")


def _required_value(operation: dict[str, Any]) -> Any:
    if "value" not in operation:
        raise ApiError(422, "Invalid", f"missing value for the {operation['op']} operation at {operation['path']}")
    return operation["value"]


def _tokens(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise ApiError(422, "Invalid", f"invalid JSON pointer: {path!r}")
    return [token.replace("~1", "/").replace("~0", "~") for token in path[1:].split("/")]


def _get(document: Any, path: str) -> Any:
    return _resolve(document, _tokens(path), path)


def _resolve(document: Any, tokens: list[str], path: str) -> Any:
    for token in tokens:
        document = _child(document, token, path)
    return document


def _child(container: Any, token: str, path: str) -> Any:
    if isinstance(container, dict) and token in container:
        return container[token]
    if isinstance(container, list) and token.isdigit() and int(token) < len(container):
        return container[int(token)]
    raise ApiError(422, "Invalid", f"the path {path!r} does not exist in the object")


def _put(document: Any, path: str, value: Any, *, insert: bool) -> Any:
    tokens = _tokens(path)
    if not tokens:
        return value
    parent = _resolve(document, tokens[:-1], path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list) and last == "-" and insert:
        parent.append(value)
    elif isinstance(parent, list) and last.isdigit() and int(last) <= len(parent) - (0 if insert else 1):
        if insert:
            parent.insert(int(last), value)
        else:
            parent[int(last)] = value
    else:
        raise ApiError(422, "Invalid", f"the path {path!r} does not exist in the object")
    return document


def _remove(document: Any, path: str) -> Any:
    tokens = _tokens(path)
    if not tokens:
        raise ApiError(422, "Invalid", "cannot remove the whole document")
    parent = _resolve(document, tokens[:-1], path)
    _child(parent, tokens[-1], path)
    if isinstance(parent, dict):
        del parent[tokens[-1]]
    else:
        del parent[int(tokens[-1])]
    return document
