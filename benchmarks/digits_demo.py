"""The `make demo` search, timed: wall time and best validation accuracy of
examples/digits.yaml on this machine (target: <= 5 minutes on 2 cores, >= 0.97).

    .venv/bin/python benchmarks/digits_demo.py
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    with tempfile.TemporaryDirectory() as runs:
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "kubenas.cli", "search", str(ROOT / "examples" / "digits.yaml"), "--runs-dir", runs, "--no-live"],
            cwd=ROOT, capture_output=True, text=True,
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            print(done.stdout[-2000:], done.stderr[-2000:], sep="\n", file=sys.stderr)
            return done.returncode
        best = json.loads((Path(runs) / "digits" / "best.json").read_text())
        children = len((Path(runs) / "digits" / "trials.jsonl").read_text().splitlines())
    accuracy = best["validation_accuracy"]
    print(f"digits demo: {children} children in {seconds:.0f}s ({seconds / 60:.1f} min, target <= 5 min); "
          f"best child {best['index']} validation accuracy {accuracy:.4f} (target >= 0.97)")
    return 0 if seconds <= 300 and accuracy >= 0.97 else 1


if __name__ == "__main__":
    sys.exit(main())
