"""reward.png: reward per child, the running best, and the controller's baseline."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display is needed or wanted
import matplotlib.pyplot as plt  # noqa: E402


def plot_rewards(*, records: list[dict], updates: list[dict], title: str, path: Path) -> None:
    finished = [r for r in records if r.get("reward") is not None]  # in the order they finished
    figure, axes = plt.subplots(figsize=(9, 4.5), dpi=100)
    if finished:
        order = list(range(1, len(finished) + 1))
        rewards = [r["reward"] for r in finished]
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
    figure.savefig(path)
    plt.close(figure)
