"""Controller cost at the paper's scale, per child: milliseconds to sample it (`ask`)
and its share of a policy update (m = 8: teacher forcing + backward + Adam, divided by
8), for NB201 cells and MacroCNN children of 6 and 20 layers (the paper's depth
schedule starts at 6 and reaches 20 by child 12,800), and the checkpoint size.

    .venv/bin/python benchmarks/controller_speed.py
"""

from __future__ import annotations

import time

import torch

from kubenas import spec as specs
from kubenas.search import Search


def spec_for(space: dict) -> specs.SearchSpec:
    document = {
        "apiVersion": specs.API_VERSION, "kind": specs.KIND, "metadata": {"name": "speed"},
        "spec": {
            "searchSpace": space,
            "trial": {"kind": "Job", "template": {"spec": {"containers": [{"name": "trainer"}]}}},
        },
    }
    return specs.parse_manifest(document).spec


def macro(layers: int, *, strides: bool) -> dict:
    return {"macroCNN": {"depth": {"initialLayers": layers, "maxLayers": layers}, "strides": {"enabled": strides}}}


CASES = (
    ("NB201 cell             ", {"type": "NB201Cell"}),
    (" 6 layers              ", macro(6, strides=False)),
    (" 6 layers + strides    ", macro(6, strides=True)),
    ("20 layers              ", macro(20, strides=False)),
    ("20 layers + strides    ", macro(20, strides=True)),
)


def measure(label: str, space: dict, *, children: int = 256) -> str:
    search = Search(spec_for(space))
    sample_seconds, update_seconds = 0.0, 0.0
    for _ in range(children):
        started = time.perf_counter()
        ticket = search.ask()
        sample_seconds += time.perf_counter() - started
        started = time.perf_counter()
        outcome = search.tell(ticket.index, {"status": "Succeeded", "validationAccuracy": [0.5 + (ticket.index % 7) / 20]})
        if outcome.update is not None:
            update_seconds += time.perf_counter() - started
    decisions = len(ticket.actions)
    size = len(search.to_bytes())
    sample, update = 1000 * sample_seconds / children, 1000 * update_seconds / children
    return (
        f"{label}({decisions:3d} decisions): sample {sample:6.2f} + update {update:6.2f} "
        f"= {sample + update:6.2f} ms/child, checkpoint {size / 1024:.0f} KiB"
    )


def main() -> None:
    torch.set_num_threads(1)
    print("controller cost per child (1 CPU thread, policy update every 8 children):")
    for label, space in CASES:
        print("  " + measure(label, space), flush=True)


if __name__ == "__main__":
    main()
