"""reward.png drawn by the plot worker process, and here when that process fails."""

from __future__ import annotations

from pathlib import Path

from kubenas.plot import PlotWorker

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RECORDS = [{"reward": 0.5}, {"reward": None}, {"reward": 0.7}, {"reward": 0.6}]
UPDATES = [{"afterResults": 2, "baseline": 0.55, "loss": 0.1}]


def test_worker_writes_every_plot_before_close_returns(tmp_path: Path):
    with PlotWorker() as plotter:
        assert plotter.process is not None
        plotter.plot(records=RECORDS[:2], updates=[], title="first", path=tmp_path / "a.png")
        plotter.plot(records=RECORDS, updates=UPDATES, title="second", path=tmp_path / "b.png")
    assert plotter.process.returncode == 0
    for name in ("a.png", "b.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG_MAGIC)
    assert not list(tmp_path.glob("*.tmp.png"))


def test_dead_worker_falls_back_to_drawing_here(tmp_path: Path):
    plotter = PlotWorker()
    plotter.process.kill()
    plotter.process.wait()
    plotter.plot(records=RECORDS, updates=UPDATES, title="fallback", path=tmp_path / "reward.png")
    plotter.close()
    assert (tmp_path / "reward.png").read_bytes().startswith(PNG_MAGIC)


def test_worker_that_fails_mid_plot_leaves_the_last_plot_to_close(tmp_path: Path):
    plotter = PlotWorker()
    missing = tmp_path / "no-such-directory" / "x.png"  # the worker's savefig raises
    plotter.plot(records=RECORDS, updates=[], title="broken", path=missing)
    plotter._last["path"] = str(tmp_path / "reward.png")  # the retry here has somewhere to write
    plotter.close()
    assert plotter.process.returncode != 0
    assert (tmp_path / "reward.png").read_bytes().startswith(PNG_MAGIC)
