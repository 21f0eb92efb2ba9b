"""reward.png: reward per child, the running best, and the controller's baseline.

`PlotWorker` draws in a second process started when a local search starts: importing
matplotlib (half a second) then overlaps the search on another core instead of adding
to it, and a long search's plot never stalls its loop. `_draw` is the drawing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def _draw(*, rewards: list[float], updates: list[dict], title: str, path: Path) -> None:
    """`rewards` in the order the children finished."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display is needed or wanted
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=100)
    if rewards:
        order = list(range(1, len(rewards) + 1))
        best, running = [], float("-inf")
        for reward in rewards:
            running = max(running, reward)
            best.append(running)
        axes.scatter(order, rewards, s=8, alpha=0.5, label="reward per child")
        axes.plot(order, best, color="tab:green", linewidth=2, label="best so far")
    if updates:
        axes.step(
            [u["afterResults"] for u in updates], [u["baseline"] for u in updates],
            where="post", color="tab:orange", label="baseline (after each policy update)",
        )
    axes.set_xlabel("children finished")
    axes.set_ylabel("reward")
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    temporary = path.with_name(path.name + ".tmp.png")
    figure.savefig(temporary)  # then renamed: a reader never sees half a PNG
    temporary.replace(path)
    plt.close(figure)


class PlotWorker:
    """Plots drawn by a child process, one JSON request per line on its stdin. If the
    process cannot start or dies, the plot is drawn here instead."""

    def __init__(self) -> None:
        try:
            self.process: subprocess.Popen | None = subprocess.Popen(
                [sys.executable, "-m", "kubenas.plot"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
            )
        except OSError:
            self.process = None
        self._last: dict | None = None  # drawn here if the process fails

    def plot(self, *, records: list[dict], updates: list[dict], title: str, path: Path) -> None:
        request = {
            "rewards": [r["reward"] for r in records if r.get("reward") is not None],
            "updates": [{"afterResults": u["afterResults"], "baseline": u["baseline"]} for u in updates],
            "title": title,
            "path": str(path),
        }
        self._last = request
        if self.process is not None and self.process.poll() is None:
            try:
                self.process.stdin.write(json.dumps(request).encode() + b"\n")
                self.process.stdin.flush()
                return
            except (BrokenPipeError, OSError):
                pass
        _draw(rewards=request["rewards"], updates=request["updates"], title=title, path=Path(path))

    def close(self, *, timeout: float = 60.0) -> None:
        """Waits for the plots asked for to be written."""
        if self.process is None:
            return
        try:
            self.process.stdin.close()
        except OSError:
            pass
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.returncode != 0 and self._last is not None:
            last = self._last
            _draw(rewards=last["rewards"], updates=last["updates"], title=last["title"], path=Path(last["path"]))

    def __enter__(self) -> PlotWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _serve() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401  (imported now, while the search runs)

    for line in sys.stdin:
        request = json.loads(line)
        _draw(rewards=request["rewards"], updates=request["updates"], title=request["title"],
              path=Path(request["path"]))


if __name__ == "__main__":
    _serve()
