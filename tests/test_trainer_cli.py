"""`python -m kubenas_trainer` end to end: result documents, exit codes, datasets."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from kubenas_trainer import cli
from kubenas_trainer.data import augment_batch, load_dataset
from kubenas_trainer.errors import DataNotFound
from kubenas_trainer.models import build_model, count_parameters
from kubenas_trainer.result import MAX_BYTES, failure_result, result_json, success_result

API_VERSION = "kubenas.io/v1alpha1"


def layer(size: int, filters: int, stride: int, inputs: list[int]) -> dict:
    return {
        "filterHeight": size,
        "filterWidth": size,
        "numFilters": filters,
        "strideHeight": stride,
        "strideWidth": stride,
        "inputs": inputs,
    }


# Three small layers with a stride: learns digits well within 3 epochs.
SMALL_ARCH = {
    "apiVersion": API_VERSION,
    "kind": "MacroCNN",
    "layers": [layer(3, 24, 1, []), layer(3, 24, 2, [0]), layer(3, 24, 1, [1])],
}
TINY_ARCH = {"apiVersion": API_VERSION, "kind": "MacroCNN", "layers": [layer(3, 8, 1, [])]}


def run_trainer(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    clean_env = {key: value for key, value in os.environ.items() if not key.startswith("KUBENAS_")}
    return subprocess.run(
        [sys.executable, "-m", "kubenas_trainer", "--threads", "1", *args],
        env=clean_env | (env or {}),
        capture_output=True,
        text=True,
        timeout=120,
    )


def assert_failed(proc: subprocess.CompletedProcess, result_file: Path, *, code: int, reason: str, words: list[str]):
    assert proc.returncode == code, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"kubenas-trainer: {reason}: ")
    for word in words:
        assert word in lines[0]
    doc = json.loads(result_file.read_text())
    assert doc == {
        "apiVersion": API_VERSION,
        "kind": "TrialResult",
        "status": "Failed",
        "reason": reason,
        "message": lines[0].removeprefix(f"kubenas-trainer: {reason}: "),
    }


def write_cifar_batch(path: Path, *, images: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    batch = {
        b"batch_label": b"fake batch",
        b"labels": rng.integers(0, 10, images).tolist(),
        b"data": rng.integers(0, 256, (images, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * images,
    }
    path.write_bytes(pickle.dumps(batch, protocol=2))


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    """A tiny `cifar-10-batches-py` (2 batches × 50 images) under tmp_path; its test batch is
    not even a pickle, so reading it would fail."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for index in (1, 2):
        write_cifar_batch(folder / f"data_batch_{index}", images=50, seed=index)
    (folder / "test_batch").write_bytes(b"the test batch must never be read")
    return folder


# --- success --------------------------------------------------------------------------


def test_digits_learns_and_writes_the_result(tmp_path: Path):
    arch_file = tmp_path / "arch.json"
    arch_file.write_text(json.dumps(SMALL_ARCH))
    result_file = tmp_path / "result.json"
    proc = run_trainer(
        "--architecture", str(arch_file), "--epochs", "3", "--batch-size", "64", "--result-file", str(result_file)
    )
    assert proc.returncode == 0, proc.stderr
    text = result_file.read_text()
    assert len(text.encode()) < MAX_BYTES
    assert proc.stdout.strip().splitlines()[-1] == text
    doc = json.loads(text)
    assert doc["apiVersion"] == API_VERSION and doc["kind"] == "TrialResult" and doc["status"] == "Succeeded"
    assert set(doc) == {
        "apiVersion", "kind", "status", "validationAccuracy", "bestValidationAccuracy", "reward",
        "parameters", "trainSeconds", "epochs", "dataset", "device",
    }
    accuracies = doc["validationAccuracy"]
    assert len(accuracies) == 3 and doc["epochs"] == 3
    assert all(0 <= value <= 1 for value in accuracies)
    assert doc["bestValidationAccuracy"] == max(accuracies) > 0.5  # chance is 0.1
    assert doc["reward"] == pytest.approx(max(accuracies[-5:]) ** 3, abs=1e-6)
    assert doc["parameters"] == count_parameters(build_model(SMALL_ARCH, in_channels=1, num_classes=10))
    assert doc["trainSeconds"] > 0
    assert (doc["dataset"], doc["device"]) == ("digits", "cpu")
    assert len(proc.stdout.strip().splitlines()) == 4  # 3 short progress lines, then the document


def test_cifar10_from_the_standard_pickles(cifar_dir: Path):
    result_file = cifar_dir.parent / "result.json"
    proc = run_trainer(
        "--architecture", json.dumps(TINY_ARCH), "--dataset", "cifar10", "--data-dir", str(cifar_dir.parent),
        "--epochs", "1", "--batch-size", "32", "--result-file", str(result_file),
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(result_file.read_text())
    assert doc["status"] == "Succeeded" and doc["dataset"] == "cifar10" and doc["epochs"] == 1
    assert doc["validationAccuracy"][0] * 10 == pytest.approx(round(doc["validationAccuracy"][0] * 10))  # 10 images
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == doc


def test_environment_variables_supply_architecture_and_result_file(tmp_path: Path):
    result_file = tmp_path / "termination.json"
    proc = run_trainer(
        "--dataset", "synthetic", "--synthetic-samples", "40", "--epochs", "1",
        env={"KUBENAS_ARCHITECTURE": json.dumps(TINY_ARCH), "KUBENAS_RESULT_FILE": str(result_file)},
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(result_file.read_text())
    assert doc["status"] == "Succeeded" and doc["dataset"] == "synthetic"


# --- failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("architecture", "words"),
    [
        ('{"apiVersion": "kubenas.io/v1alpha1", "kind": ', ["not valid JSON"]),
        (json.dumps(SMALL_ARCH | {"layers": [layer(4, 8, 1, [])]}), ["layers[0].filterHeight", "odd"]),
        (json.dumps(SMALL_ARCH | {"layers": [layer(3, 8, 1, []), layer(3, 8, 1, [1])]}), ["layers[1].inputs: 1 is not an earlier layer"]),
        ("no/such/file.json", ["no/such/file.json"]),
    ],
    ids=["malformed-json", "even-filter", "bad-input", "missing-file"],
)
def test_bad_architecture_exits_3(tmp_path: Path, architecture: str, words: list[str]):
    result_file = tmp_path / "result.json"
    proc = run_trainer("--architecture", architecture, "--result-file", str(result_file))
    assert_failed(proc, result_file, code=3, reason="InvalidArchitecture", words=words)


def test_missing_architecture_exits_3(tmp_path: Path):
    result_file = tmp_path / "result.json"
    proc = run_trainer("--result-file", str(result_file))
    assert_failed(proc, result_file, code=3, reason="InvalidArchitecture", words=["KUBENAS_ARCHITECTURE"])


def test_missing_cifar_dir_exits_4(tmp_path: Path):
    result_file = tmp_path / "result.json"
    missing = tmp_path / "nowhere"
    proc = run_trainer(
        "--architecture", json.dumps(TINY_ARCH), "--dataset", "cifar10", "--data-dir", str(missing),
        "--result-file", str(result_file),
    )
    assert_failed(proc, result_file, code=4, reason="DataNotFound", words=[str(missing)])


def test_absurd_learning_rate_diverges_exit_5(tmp_path: Path):
    result_file = tmp_path / "result.json"
    proc = run_trainer(
        "--architecture", json.dumps(TINY_ARCH), "--epochs", "2", "--learning-rate", "1e20",
        "--result-file", str(result_file),
    )
    assert_failed(proc, result_file, code=5, reason="Diverged", words=["epoch 1"])


@pytest.mark.parametrize(
    ("flags", "words"),
    [(["--no-such-flag"], ["--no-such-flag"]), (["--epochs", "many"], ["--epochs"]), (["--epochs", "0"], ["epochs"])],
    ids=["unknown-flag", "not-an-int", "zero-epochs"],
)
def test_bad_flags_exit_2(tmp_path: Path, flags: list[str], words: list[str]):
    result_file = tmp_path / "result.json"
    proc = run_trainer("--architecture", json.dumps(TINY_ARCH), *flags, "--result-file", str(result_file))
    assert_failed(proc, result_file, code=2, reason="InvalidArguments", words=words)


def test_unexpected_exception_is_internal_error_exit_1(tmp_path: Path, monkeypatch, capsys):
    import kubenas_trainer.train

    def boom(**_):
        raise RuntimeError("boom")

    monkeypatch.setattr(kubenas_trainer.train, "train", boom)
    result_file = tmp_path / "result.json"
    code = cli.main(["--architecture", json.dumps(TINY_ARCH), "--threads", "1", "--result-file", str(result_file)])
    assert code == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "kubenas-trainer: InternalError: RuntimeError: boom"
    assert json.loads(result_file.read_text())["reason"] == "InternalError"


def test_out_of_device_memory_is_named_exit_6(tmp_path: Path, monkeypatch, capsys):
    import torch

    import kubenas_trainer.train

    def too_big(**_):  # what a GPU raised for an oversized child (see benchmarks/gpu_check.sh)
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 8.00 GiB. GPU 0 has 79 GiB")

    monkeypatch.setattr(kubenas_trainer.train, "train", too_big)
    result_file = tmp_path / "result.json"
    code = cli.main(["--architecture", json.dumps(TINY_ARCH), "--threads", "1", "--result-file", str(result_file)])
    assert code == 6
    result = json.loads(result_file.read_text())
    assert result["reason"] == "OutOfMemory"
    assert result["message"] == "CUDA out of memory; try a smaller --batch-size"


def test_help_exits_0_without_importing_torch():
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from kubenas_trainer.cli import main; code = main(['--help']); "
         "assert 'torch' not in sys.modules; sys.exit(code)"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "--architecture" in proc.stdout


# --- the result document --------------------------------------------------------------


def test_result_document_stays_under_4096_bytes_with_many_epochs():
    rng = np.random.default_rng(0)
    accuracies = (rng.random(2000) * 0.5 + 0.3).tolist()
    accuracies[0] = 0.999999  # best epoch will be trimmed away, but still reported
    doc = success_result(
        validation_accuracy=accuracies, reward_last_epochs=5, reward_power=3.0, parameters=123,
        train_seconds=9999.123456, dataset="cifar10", device="cuda",
    )
    size = len(json.dumps(doc).encode())
    assert size < MAX_BYTES
    kept = doc["validationAccuracy"]
    assert 100 < len(kept) < 2000
    one_more = doc | {
        "validationAccuracy": [round(accuracies[-len(kept) - 1], 5), *kept],
        "validationAccuracyFirstEpoch": doc["validationAccuracyFirstEpoch"] - 1,
    }
    assert len(json.dumps(one_more).encode()) >= MAX_BYTES  # kept as many as fit
    assert doc["validationAccuracyFirstEpoch"] == 2000 - len(kept)
    assert kept == [round(value, 5) for value in accuracies[-len(kept):]]
    assert doc["epochs"] == 2000
    assert doc["bestValidationAccuracy"] == 1.0
    assert doc["reward"] == round(max(kept[-5:]) ** 3, 6)
    assert result_json(doc) == json.dumps(doc)


def test_short_result_is_not_trimmed():
    doc = success_result(
        validation_accuracy=[0.5, 0.123456789], reward_last_epochs=5, reward_power=3.0, parameters=1,
        train_seconds=1.0, dataset="digits", device="cpu",
    )
    assert doc["validationAccuracy"] == [0.5, 0.12346]
    assert "validationAccuracyFirstEpoch" not in doc


def test_failure_document_is_one_bounded_line():
    doc = failure_result(reason="DataNotFound", message="first line\nsecond " + "x" * 10_000)
    assert "\n" not in doc["message"] and doc["message"].startswith("first line second")
    assert len(json.dumps(doc).encode()) < MAX_BYTES


# --- datasets -------------------------------------------------------------------------


def test_cifar10_split_normalisation_and_both_directory_forms(cifar_dir: Path):
    for data_dir in (cifar_dir, cifar_dir.parent):
        data = load_dataset(name="cifar10", data_dir=str(data_dir), device=torch.device("cpu"), seed=0)
        assert data.train_x.shape == (90, 3, 32, 32) and data.val_x.shape == (10, 3, 32, 32)
        assert data.train_y.dtype == torch.int64 and data.num_classes == 10 and data.augment
    # Validation = the last images of the last batch.
    raw = pickle.loads((cifar_dir / "data_batch_2").read_bytes())
    expected = torch.from_numpy(raw[b"data"][-10:]).view(-1, 3, 32, 32).float() / 255
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    assert torch.allclose(data.val_x, (expected - mean) / std, atol=1e-5)
    assert data.val_y.tolist() == raw[b"labels"][-10:]


def test_cifar10_missing_or_broken_files_raise_data_not_found(cifar_dir: Path):
    (cifar_dir / "data_batch_1").unlink()
    with pytest.raises(DataNotFound, match="data_batch_1"):
        load_dataset(name="cifar10", data_dir=str(cifar_dir), device=torch.device("cpu"), seed=0)
    (cifar_dir / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(DataNotFound, match="cannot read"):
        load_dataset(name="cifar10", data_dir=str(cifar_dir), device=torch.device("cpu"), seed=0)
    # A pickle that would run code is refused, not executed.
    (cifar_dir / "data_batch_1").write_bytes(pickle.dumps(os.system))
    with pytest.raises(DataNotFound, match="refusing"):
        load_dataset(name="cifar10", data_dir=str(cifar_dir), device=torch.device("cpu"), seed=0)


def test_digits_split_is_fixed_and_standardised():
    first = load_dataset(name="digits", data_dir=None, device=torch.device("cpu"), seed=0)
    second = load_dataset(name="digits", data_dir=None, device=torch.device("cpu"), seed=123)
    assert first.train_x.shape == (1797 - 360, 1, 8, 8) and first.val_x.shape == (360, 1, 8, 8)
    assert torch.equal(first.val_x, second.val_x) and torch.equal(first.train_y, second.train_y)
    assert abs(first.train_x.mean().item()) < 1e-4 and abs(first.train_x.std().item() - 1) < 1e-3


def test_augment_batch_crops_and_flips_per_image():
    torch.manual_seed(0)
    images = torch.arange(2 * 3 * 6 * 6, dtype=torch.float32).view(2, 3, 6, 6) + 1  # no zeros
    images = images.repeat(64, 1, 1, 1)
    out = augment_batch(images, padding=2)
    assert out.shape == images.shape
    unchanged = flipped = 0
    for original, augmented in zip(images, out):
        # Every output is a translated (zero-filled) window, possibly mirrored: find which.
        padded = torch.nn.functional.pad(original, (2, 2, 2, 2))
        matches = [
            (top, left, flip)
            for top in range(5)
            for left in range(5)
            for flip in (False, True)
            if torch.equal((padded.flip(2) if flip else padded)[:, top : top + 6, left : left + 6], augmented)
        ]
        assert matches, "not a crop of the padded image"
        unchanged += (2, 2, False) in matches
        flipped += all(flip for _, _, flip in matches)
    assert unchanged < len(images) / 4 and 0 < flipped < len(images)


# --- training -------------------------------------------------------------------------


@pytest.mark.parametrize("nesterov", [True, False])
def test_sgd_matches_torch_optim_sgd(nesterov: bool):
    from kubenas_trainer.train import SGD

    torch.manual_seed(0)
    reference = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.ReLU(), torch.nn.Linear(4, 3))
    ours = copy.deepcopy(reference)
    reference_sgd = torch.optim.SGD(reference.parameters(), lr=0.1, momentum=0.9, nesterov=nesterov, weight_decay=1e-2)
    our_sgd = SGD(list(ours.parameters()), momentum=0.9, nesterov=nesterov, weight_decay=1e-2)
    for step in range(5):
        x, y = torch.randn(8, 5), torch.randint(0, 3, (8,))
        lr = 0.1 * 0.5 ** step  # a changing learning rate, as under a schedule
        for group in reference_sgd.param_groups:
            group["lr"] = lr
        for model, optimizer in ((reference, reference_sgd), (ours, our_sgd)):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
        reference_sgd.step()
        our_sgd.step(lr=lr)
    for expected, actual in zip(reference.parameters(), ours.parameters()):
        assert torch.allclose(expected, actual, atol=1e-6)


def test_learning_rate_schedules():
    from kubenas_trainer.train import TrainConfig, _lr_factor

    cosine = _lr_factor(TrainConfig(lr_schedule="cosine"), total_steps=100)
    assert cosine(0) == 1.0 and cosine(50) == pytest.approx(0.5) and cosine(100) == pytest.approx(0.0)
    step = _lr_factor(TrainConfig(lr_schedule="step"), total_steps=100)
    assert [step(s) for s in (0, 49, 50, 74, 75, 99)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])
    assert _lr_factor(TrainConfig(lr_schedule="constant"), total_steps=100)(99) == 1.0
