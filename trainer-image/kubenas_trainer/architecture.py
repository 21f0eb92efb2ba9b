"""Parse and validate the architecture JSON (the trainer's input contract, see README.md).

Standard library only: the checks must not depend on torch, so a bad document is
rejected (exit 3) before anything heavy is imported. Every error names the field, e.g.
`layers[2].inputs: 3 is not an earlier layer`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from .errors import InvalidArchitecture

API_VERSION = "kubenas.io/v1alpha1"
KINDS = ("MacroCNN", "NB201Cell")

MACRO_LAYER_FIELDS = ("filterHeight", "filterWidth", "numFilters", "strideHeight", "strideWidth", "inputs")

NB201_OPERATIONS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# Edge k of `edges` connects node NB201_EDGES[k][0] -> node NB201_EDGES[k][1].
NB201_EDGES = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))

_TOP_LEVEL_FIELDS = {
    "MacroCNN": ("apiVersion", "kind", "layers"),
    "NB201Cell": ("apiVersion", "kind", "cell", "edges", "channels", "cellsPerStage"),
}


def validate_architecture(doc: dict | str) -> dict:
    """Check an architecture document (a dict, or its JSON text); return a normalised copy.

    Raises InvalidArchitecture naming the first bad field.
    """
    if isinstance(doc, (str, bytes)):
        try:
            doc = json.loads(doc)
        except (ValueError, UnicodeDecodeError) as error:
            raise InvalidArchitecture(f"not valid JSON: {error}") from None
    if not isinstance(doc, dict):
        raise InvalidArchitecture(f"must be a JSON object, got {_json_type(doc)}")
    if doc.get("apiVersion") != API_VERSION:
        raise InvalidArchitecture(f"apiVersion: must be {API_VERSION!r}, got {doc.get('apiVersion')!r}")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise InvalidArchitecture(f"kind: must be one of {', '.join(KINDS)}, got {kind!r}")
    _check_fields(doc, _TOP_LEVEL_FIELDS[kind], where="")
    if kind == "MacroCNN":
        return {"apiVersion": API_VERSION, "kind": kind, "layers": _validate_macro_layers(doc["layers"])}
    return _validate_nb201(doc)


def cell_string(edges: Sequence[str]) -> str:
    """The standard NAS-Bench-201 cell string of six edge operations (order 1←0, 2←0, 2←1, 3←0, 3←1, 3←2)."""
    if len(edges) != len(NB201_EDGES):
        raise InvalidArchitecture(f"edges: must list {len(NB201_EDGES)} operations, got {len(edges)}")
    nodes = []
    for target in (1, 2, 3):
        parts = [f"{edges[k]}~{source}" for k, (source, node) in enumerate(NB201_EDGES) if node == target]
        nodes.append("|" + "|".join(parts) + "|")
    return "+".join(nodes)


def parse_cell_string(cell: str) -> list[str]:
    """The six edge operations of a cell string like `|op~0|+|op~0|op~1|+|op~0|op~1|op~2|`."""
    if not isinstance(cell, str):
        raise InvalidArchitecture(f"cell: must be a string, got {_json_type(cell)}")
    nodes = cell.split("+")
    if len(nodes) != 3:
        raise InvalidArchitecture(f"cell: must have 3 '+'-separated nodes, got {len(nodes)} in {cell!r}")
    edges: list[str] = []
    for target, node in enumerate(nodes, start=1):
        if len(node) < 2 or not node.startswith("|") or not node.endswith("|"):
            raise InvalidArchitecture(f"cell: node {target} must look like '|op~0|…|', got {node!r}")
        parts = node[1:-1].split("|")
        if len(parts) != target:
            raise InvalidArchitecture(f"cell: node {target} must have {target} inputs, got {len(parts)} in {node!r}")
        for source, part in enumerate(parts):
            operation, tilde, index = part.partition("~")
            if not tilde or index != str(source):
                raise InvalidArchitecture(f"cell: node {target} input {source} must be 'op~{source}', got {part!r}")
            if operation not in NB201_OPERATIONS:
                raise InvalidArchitecture(
                    f"cell: unknown operation {operation!r} (one of {', '.join(NB201_OPERATIONS)})"
                )
            edges.append(operation)
    # Node by node, input by input is exactly the canonical edge order 1←0, 2←0, 2←1, 3←0, ...
    return edges


def _validate_macro_layers(layers: Any) -> list[dict]:
    if not isinstance(layers, list):
        raise InvalidArchitecture(f"layers: must be a list, got {_json_type(layers)}")
    if not layers:
        raise InvalidArchitecture("layers: must have at least one layer")
    normalised = []
    for index, layer in enumerate(layers):
        where = f"layers[{index}]"
        if not isinstance(layer, dict):
            raise InvalidArchitecture(f"{where}: must be an object, got {_json_type(layer)}")
        _check_fields(layer, MACRO_LAYER_FIELDS, where=where)
        for name in ("filterHeight", "filterWidth"):
            size = _integer(layer[name], where=f"{where}.{name}", minimum=1)
            if size % 2 == 0:
                # Even filters cannot have symmetric "same" padding (filter // 2 on each side).
                raise InvalidArchitecture(f"{where}.{name}: must be odd, got {size}")
        for name in ("numFilters", "strideHeight", "strideWidth"):
            _integer(layer[name], where=f"{where}.{name}", minimum=1)
        inputs = layer["inputs"]
        if not isinstance(inputs, list):
            raise InvalidArchitecture(f"{where}.inputs: must be a list, got {_json_type(inputs)}")
        for source in inputs:
            _integer(source, where=f"{where}.inputs", minimum=None)
            if not 0 <= source < index:
                raise InvalidArchitecture(f"{where}.inputs: {source} is not an earlier layer")
        if any(later <= earlier for earlier, later in zip(inputs, inputs[1:])):
            raise InvalidArchitecture(f"{where}.inputs: must be strictly increasing, got {inputs}")
        normalised.append({name: layer[name] for name in MACRO_LAYER_FIELDS[:-1]} | {"inputs": list(inputs)})
    return normalised


def _validate_nb201(doc: dict) -> dict:
    edges = doc["edges"]
    if not isinstance(edges, list):
        raise InvalidArchitecture(f"edges: must be a list, got {_json_type(edges)}")
    if len(edges) != len(NB201_EDGES):
        raise InvalidArchitecture(f"edges: must list {len(NB201_EDGES)} operations, got {len(edges)}")
    for index, operation in enumerate(edges):
        if operation not in NB201_OPERATIONS:
            raise InvalidArchitecture(
                f"edges[{index}]: must be one of {', '.join(NB201_OPERATIONS)}, got {operation!r}"
            )
    cell_edges = parse_cell_string(doc["cell"])
    if cell_edges != edges:
        raise InvalidArchitecture(f"cell: {doc['cell']!r} disagrees with edges (expected {cell_string(edges)!r})")
    channels = _integer(doc["channels"], where="channels", minimum=1)
    cells_per_stage = _integer(doc["cellsPerStage"], where="cellsPerStage", minimum=1)
    return {
        "apiVersion": API_VERSION,
        "kind": "NB201Cell",
        "cell": cell_string(edges),
        "edges": list(edges),
        "channels": channels,
        "cellsPerStage": cells_per_stage,
    }


def _check_fields(obj: dict, allowed: Sequence[str], *, where: str) -> None:
    """Every allowed field present, nothing else (so typos fail loudly)."""
    prefix = f"{where}." if where else ""
    for name in obj:
        if name not in allowed:
            raise InvalidArchitecture(f"{prefix}{name}: unknown field")
    for name in allowed:
        if name not in obj:
            raise InvalidArchitecture(f"{prefix}{name}: missing field")


def _integer(value: Any, *, where: str, minimum: int | None) -> int:
    # bool is an int subclass in Python, but `true` is no layer size.
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArchitecture(f"{where}: must be an integer, got {_json_type(value)} {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidArchitecture(f"{where}: must be >= {minimum}, got {value}")
    return value


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number"}
    return "null" if value is None else names.get(type(value), type(value).__name__)
