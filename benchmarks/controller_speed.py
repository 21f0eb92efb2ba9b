"""Controller cost at the paper's scale: milliseconds to sample one child and to run
one policy update (m = 8, teacher forcing + backward + Adam), for MacroCNN children of
6 and 20 layers (the paper's depth schedule starts at 6 and reaches 20 by child
12,800), and the checkpoint size.

    .venv/bin/python benchmarks/controller_speed.py
"""

from __future__ import annotations

import time

import torch

from kubenas import spec as specs
from kubenas.search import Search


def spec_with_depth(layers: int, *, strides: bool) -> specs.SearchSpec:
    document = {
        "apiVersion": specs.API_VERSION, "kind": specs.KIND, "metadata": {"name": "speed"},
        "spec": {
            "searchSpace": {"macroCNN": {"depth": {"initialLayers": layers, "maxLayers": layers}, "strides": {"enabled": strides}}},
            "trial": {"kind": "Job", "template": {"spec": {"containers": [{"name": "trainer"}]}}},
        },
    }
    return specs.parse_manifest(document).spec


def measure(layers: int, *, strides: bool, children: int = 64) -> str:
    search = Search(spec_with_depth(layers, strides=strides))
    sample_seconds, update_seconds, updates = 0.0, 0.0, 0
    for _ in range(children):
        started = time.perf_counter()
        ticket = search.ask()
        sample_seconds += time.perf_counter() - started
        started = time.perf_counter()
        outcome = search.tell(ticket.index, {"status": "Succeeded", "validationAccuracy": [0.5 + (ticket.index % 7) / 20]})
        if outcome.update is not None:
            update_seconds += time.perf_counter() - started
            updates += 1
    decisions = len(ticket.actions)
    size = len(search.to_bytes())
    return (
        f"{layers:2d} layers{' + strides' if strides else '          '} ({decisions:3d} decisions): "
        f"sample {1000 * sample_seconds / children:6.1f} ms/child, update {1000 * update_seconds / updates:6.1f} ms "
        f"per batch of 8, checkpoint {size / 1024:.0f} KiB"
    )


def main() -> None:
    torch.set_num_threads(1)
    print("controller cost (1 CPU thread):")
    for layers, strides in ((6, False), (6, True), (20, False), (20, True)):
        print("  " + measure(layers, strides=strides))


if __name__ == "__main__":
    main()
