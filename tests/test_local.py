import asyncio
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kubenas import spec as specs
from kubenas.local import RunExists, run_search
from kubenas.runs import RunDirectory
from kubenas.spaces import cell_string
from tests.helpers import manifest

FAKE_TRAINER = str(Path(__file__).with_name("fake_trainer.py"))
KUBENAS = [sys.executable, "-m", "kubenas.cli"]


def job_manifest(*, name="fake", env=None, args=(), **spec):
    container = {
        "name": "trainer",
        "image": "ignored.example/trainer:1",
        "command": ["python", FAKE_TRAINER],
        "args": list(args),
        "env": [{"name": k, "value": v} for k, v in (env or {}).items()],
    }
    document = manifest({"trial": {"kind": "Job", "template": {"spec": {"containers": [container]}}}, **spec}, name=name)
    document["spec"].setdefault("searchSpace", {"type": "MacroCNN", "macroCNN": {"depth": {"initialLayers": 2}, "imageSize": [8, 8]}})
    document["spec"].setdefault("controller", {"batchSize": 2})
    return document


def run(document, tmp_path, **options):
    parsed = specs.parse_manifest(document)
    return asyncio.run(run_search(parsed, document, runs_dir=tmp_path / "runs", **options))


def records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "trials.jsonl").read_text().splitlines()]


def test_job_children_run_as_subprocesses_and_everything_is_recorded(tmp_path: Path) -> None:
    document = job_manifest(
        maxTrials=6, parallelism=2, env={"WHO": "child-$(KUBENAS_TRIAL_INDEX)"}, args=["--index", "$(KUBENAS_TRIAL_INDEX)", "$(WHO)", "$(UNDEFINED)", "$$(KEPT)"]
    )
    result = run(document, tmp_path)
    assert result.phase == "Succeeded"
    run_dir = tmp_path / "runs" / "fake"
    lines = records(run_dir)
    assert sorted(r["index"] for r in lines) == list(range(6))
    for record in lines:
        assert {"index", "architecture", "status", "reward", "result", "actions", "policyVersion"} <= set(record)
        assert record["status"] == "Succeeded"
        i = record["index"]
        assert record["result"]["argv"] == ["--index", str(i), f"child-{i}", "$(UNDEFINED)", "$(KEPT)"]
        assert record["result"]["threads"] == str(max(1, (os.cpu_count() or 1) // min(2, os.cpu_count() or 1)))
        assert record["reward"] == pytest.approx(record["result"]["validationAccuracy"][-1] ** 3)
        assert (run_dir / "trials" / f"{i:06d}" / "log.txt").read_text().strip().startswith("{")
    best = json.loads((run_dir / "best.json").read_text())
    assert best.pop("usage")["childrenMeasured"] == 6  # tests/test_budget_local.py checks the figures
    top = max(lines, key=lambda r: (r["reward"], -r["index"]))
    assert best == {"index": top["index"], "architecture": top["architecture"], "reward": top["reward"], "validation_accuracy": top["validationAccuracy"]}
    assert (run_dir / "reward.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len((run_dir / "updates.jsonl").read_text().splitlines()) == 3  # 6 results, 2 per update
    assert result.search.finished


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("failodd", "InvalidArchitecture"), ("exit1", "Error"), ("noresult", "MissingResult"), ("garbage", "MalformedResult")],
)
def test_failing_children_are_recorded_with_their_reason(tmp_path: Path, mode: str, reason: str) -> None:
    result = run(job_manifest(maxTrials=4, parallelism=2, env={"FAKE_MODE": mode}), tmp_path)
    assert result.phase == "Succeeded"  # failures alone do not stop a search without maxFailedTrials
    lines = records(tmp_path / "runs" / "fake")
    failed = [r for r in lines if r["status"] == "Failed"]
    assert failed and all(r["reason"] == reason and r["reward"] == 0.0 for r in failed)
    assert len(lines) == 4


def test_deadline_exceeded(tmp_path: Path) -> None:
    document = job_manifest(maxTrials=1, env={"FAKE_MODE": "ok", "FAKE_SECONDS": "30"})
    document["spec"]["trial"]["activeDeadlineSeconds"] = 1
    started = time.monotonic()
    run(document, tmp_path)
    assert time.monotonic() - started < 20
    assert records(tmp_path / "runs" / "fake")[0]["reason"] == "DeadlineExceeded"


def test_max_failed_trials_fails_the_search(tmp_path: Path) -> None:
    result = run(job_manifest(maxTrials=20, parallelism=1, maxFailedTrials=2, env={"FAKE_MODE": "fail"}), tmp_path)
    assert (result.phase, result.reason) == ("Failed", "MaxFailedTrialsReached")
    assert len(records(tmp_path / "runs" / "fake")) == 3  # the third failure is one too many


def test_an_existing_run_needs_resume_or_restart(tmp_path: Path) -> None:
    document = job_manifest(maxTrials=2)
    run(document, tmp_path)
    with pytest.raises(RunExists, match="--resume"):
        run(document, tmp_path)
    assert run(document, tmp_path, restart=True).search.counters.created == 2
    assert len(records(tmp_path / "runs" / "fake")) == 2
    document["spec"]["maxTrials"] = 5  # raising maxTrials continues a finished search
    result = run(document, tmp_path, resume=True)
    assert sorted(r["index"] for r in records(tmp_path / "runs" / "fake")) == list(range(5))
    assert result.search.counters.succeeded == 5


def test_restart_trains_every_child_again(tmp_path: Path) -> None:
    """--restart starts over: the earlier run's children (their result files) are not
    taken for this run's, even where the same seed samples the same architectures."""
    run(job_manifest(maxTrials=3), tmp_path)
    failing = job_manifest(maxTrials=3, env={"FAKE_MODE": "fail"})
    result = run(failing, tmp_path, restart=True)
    assert result.search.counters.failed == 3 and result.search.counters.succeeded == 0
    assert sorted(p.name for p in (tmp_path / "runs" / "fake" / "trials").iterdir()) == ["000000", "000001", "000002"]


def test_crash_between_record_and_checkpoint_is_repaired(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The runner dies after appending children to trials.jsonl but before the checkpoint
    recording them: resume tells them from the record and runs none of them again."""
    saved = []
    original = RunDirectory.save

    def save_and_keep(self, search):
        original(self, search)
        saved.append(self.checkpoint.read_bytes())

    monkeypatch.setattr(RunDirectory, "save", save_and_keep)
    document = job_manifest(maxTrials=8, parallelism=2)
    run(document, tmp_path)
    run_dir = tmp_path / "runs" / "fake"
    before = records(run_dir)
    (run_dir / "checkpoint.pt").write_bytes(saved[2])  # an old checkpoint: children in flight
    shutil.rmtree(run_dir / "trials")  # a rerun would recreate these
    with (run_dir / "trials.jsonl").open("a") as handle:
        handle.write('{"index": 3, "torn')  # and a torn last line
    result = run(document, tmp_path, resume=True)
    assert result.phase == "Succeeded" and result.search.counters.succeeded == 8
    assert not (run_dir / "trials").exists() or not any((run_dir / "trials").iterdir())
    assert records(run_dir) == before


def full_table(path: Path) -> Path:
    operations = ["none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3"]
    lines = ["arch,cellstr,cifar10-val"]
    for number, edges in enumerate(itertools.product(operations, repeat=6)):
        accuracy = 10 + 15 * sum(e == "nor_conv_3x3" for e in edges) + sum(map(len, edges)) / 10
        lines.append(f"{number},{cell_string(edges)},{accuracy:.3f}")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_tabular_search(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative table paths start from the working directory
    full_table(tmp_path / "table.csv")
    document = manifest(
        {"searchSpace": {"type": "NB201Cell"}, "trial": {"kind": "Tabular", "tabular": {"path": "table.csv"}},
         "reward": {"power": 1, "lastEpochs": 1}, "maxTrials": 120, "parallelism": 4, "controller": {"learningRate": 0.05}},
        name="table",
    )
    result = run(document, tmp_path)
    lines = records(tmp_path / "runs" / "table")
    assert [r["index"] for r in lines] == list(range(120))
    assert result.search.controller.version == 15
    first, last = lines[:30], lines[-30:]
    assert sum(r["reward"] for r in last) > sum(r["reward"] for r in first)  # it learns
    document["spec"]["trial"]["tabular"]["metric"] = "cifar100-val"
    with pytest.raises(specs.SpecError, match="must name the columns 'cellstr' and 'cifar100-val'"):
        run(document, tmp_path, restart=True)


def cli(*args, cwd, **kwargs):
    return subprocess.run([*KUBENAS, *args], cwd=cwd, capture_output=True, text=True, timeout=120, **kwargs)


def wait_for_lines(path: Path, count: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= count:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} never reached {count} lines")


def running_fake_trainers() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and FAKE_TRAINER.encode() in (entry / "cmdline").read_bytes():
                if (entry / "stat").read_text().split()[2] != "Z":  # zombies are dead
                    pids.append(int(entry.name))
        except OSError:
            continue
    return pids


@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "kill-9"])
def test_resume_after_interruption_loses_and_repeats_nothing(tmp_path: Path, how: signal.Signals) -> None:
    import yaml

    document = job_manifest(maxTrials=10, parallelism=2, env={"FAKE_SECONDS": "0.4"})
    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(document))
    process = subprocess.Popen([*KUBENAS, "search", str(path), "--no-live"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trials = tmp_path / "runs" / "fake" / "trials.jsonl"
    wait_for_lines(trials, 3)
    process.send_signal(how)
    out, err = process.communicate(timeout=60)
    if how == signal.SIGINT:
        assert process.returncode == 130, err
        assert "--resume" in out
    else:
        assert process.returncode == -signal.SIGKILL
    interrupted = len(trials.read_text().splitlines())
    assert interrupted < 10
    done = cli("search", str(path), "--resume", "--no-live", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    indices = [r["index"] for r in records(tmp_path / "runs" / "fake")]
    assert sorted(indices) == list(range(10))  # each child exactly once
    assert "Succeeded: 10 succeeded" in done.stdout


def test_cli_reports_bad_manifests_with_the_field(tmp_path: Path) -> None:
    document = job_manifest()
    document["spec"]["controller"] = {"lstmSize": -1}
    path = tmp_path / "bad.yaml"
    path.write_text(json.dumps(document))
    result = cli("search", str(path), cwd=tmp_path)
    assert result.returncode == 2
    assert "spec.controller.lstmSize: Input should be greater than or equal to 1" in result.stderr
    assert not (tmp_path / "runs").exists()


def test_cli_validate_prints_defaults(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text(json.dumps(job_manifest()))
    result = cli("validate", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "lstmSize: 35" in result.stdout and "learningRate: 0.0006" in result.stdout


def test_local_search_with_the_real_trainer(tmp_path: Path) -> None:
    document = manifest(
        {
            "searchSpace": {"macroCNN": {"imageSize": [8, 8], "depth": {"initialLayers": 2}, "numFilters": [24, 36]}},
            "controller": {"batchSize": 2},
            "reward": {"lastEpochs": 2},
            "maxTrials": 2,
            "parallelism": 2,
            "trial": {"kind": "Job", "template": {"spec": {"containers": [{
                "name": "trainer", "command": ["python", "-m", "kubenas_trainer"],
                "args": ["--dataset", "digits", "--epochs", "3", "--batch-size", "32", "--learning-rate", "0.05"],
            }]}}},
        },
        name="real",
    )
    result = run(document, tmp_path)
    assert result.phase == "Succeeded" and result.search.controller.version == 1
    for record in records(tmp_path / "runs" / "real"):
        assert record["status"] == "Succeeded", record
        trainer_result = record["result"]
        assert trainer_result["dataset"] == "digits" and len(trainer_result["validationAccuracy"]) == 3
        assert record["validationAccuracy"] == max(trainer_result["validationAccuracy"]) > 0.3  # chance is 0.1
        assert record["reward"] == pytest.approx(trainer_result["reward"], abs=1e-5)  # engine and trainer agree


def test_resume_refuses_a_changed_search(tmp_path: Path) -> None:
    document = job_manifest(maxTrials=1)
    path = tmp_path / "fake.yaml"
    path.write_text(json.dumps(document))
    assert cli("search", str(path), "--no-live", cwd=tmp_path).returncode == 0
    document["spec"]["seed"] = 5
    path.write_text(json.dumps(document))
    resumed = cli("search", str(path), "--resume", "--no-live", cwd=tmp_path)
    assert resumed.returncode == 2
    assert "cannot resume fake" in resumed.stderr and "cannot change during a search" in resumed.stderr


def test_manifest_files_may_hold_other_documents(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "bundle.yaml"
    path.write_text(yaml.safe_dump_all([{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, job_manifest()]))
    result = cli("validate", str(path), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kind: NeuralArchitectureSearch" in result.stdout


def test_children_die_with_a_killed_runner(tmp_path: Path) -> None:
    import yaml

    path = tmp_path / "fake.yaml"
    path.write_text(yaml.safe_dump(job_manifest(maxTrials=1, env={"FAKE_SECONDS": "60"})))
    process = subprocess.Popen([*KUBENAS, "search", str(path), "--no-live"], cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not running_fake_trainers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running_fake_trainers(), "the child never started"
    process.kill()
    process.wait()
    deadline = time.monotonic() + 10
    while running_fake_trainers() and time.monotonic() < deadline:
        time.sleep(0.1)
    orphans = running_fake_trainers()
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
    assert not orphans  # a 60-second child would outlive the runner by far without PR_SET_PDEATHSIG
