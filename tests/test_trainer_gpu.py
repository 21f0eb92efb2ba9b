"""The trainer's CUDA path (`--device cuda`): data resident on the GPU, bf16 autocast,
channels_last. Skipped where `torch.cuda.is_available()` is false (here and in CI);
`benchmarks/gpu_check.sh` runs it on a GPU machine.

Imports only kubenas_trainer, torch, numpy and pytest, so it runs on a bare GPU box with
`PYTHONPATH=trainer-image`. About 30-60 s on an H100 (each CLI run pays a torch import
and a CUDA initialisation).

`KUBENAS_GPU_TEST_DEVICE=cpu` runs the same checks against the CPU path (fp32,
contiguous NCHW instead of bf16 and channels_last): a way to check these tests
themselves on a machine without a GPU.

Not covered: a child too big for the GPU. The trainer has no named reason for running
out of device memory, so torch.cuda.OutOfMemoryError ends as an InternalError (exit 1).
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

import kubenas_trainer.train as train_module
from kubenas_trainer.architecture import cell_string, validate_architecture
from kubenas_trainer.data import load_dataset
from kubenas_trainer.models import build_model, count_parameters
from kubenas_trainer.result import MAX_BYTES
from tests.test_trainer_cli import layer, write_cifar_batch

DEVICE = os.environ.get("KUBENAS_GPU_TEST_DEVICE", "cuda")
ON_CUDA = DEVICE == "cuda"

pytestmark = pytest.mark.skipif(
    ON_CUDA and not torch.cuda.is_available(),
    reason="needs a CUDA GPU (torch.cuda.is_available() is False); run benchmarks/gpu_check.sh on a GPU machine",
)

API_VERSION = "kubenas.io/v1alpha1"
# What the CUDA path promises (train.py): bf16 autocast, channels_last parameters and activations.
COMPUTE_DTYPE = torch.bfloat16 if ON_CUDA else torch.float32
MEMORY_FORMAT = torch.channels_last if ON_CUDA else torch.contiguous_format
EPOCH_LINE = re.compile(r"^epoch (\d+)/(\d+) loss (\S+) val_acc (\S+) (\S+)s$")


# Skip connections (padding + concatenation), a stride and a layer reading the image.
MACRO_ARCH = validate_architecture(
    {
        "apiVersion": API_VERSION,
        "kind": "MacroCNN",
        "layers": [
            layer(3, 32, 1, []),
            layer(5, 32, 2, [0]),
            layer(3, 32, 1, [0, 1]),
            layer(1, 16, 1, []),
        ],
    }
)
NB201_EDGES = ["nor_conv_3x3", "none", "avg_pool_3x3", "skip_connect", "nor_conv_1x1", "nor_conv_3x3"]
NB201_ARCH = validate_architecture(
    {
        "apiVersion": API_VERSION,
        "kind": "NB201Cell",
        "cell": cell_string(NB201_EDGES),
        "edges": NB201_EDGES,
        "channels": 16,
        "cellsPerStage": 1,
    }
)
TINY_ARCH = validate_architecture({"apiVersion": API_VERSION, "kind": "MacroCNN", "layers": [layer(3, 8, 1, [])]})
ARCHITECTURES = {"macro": MACRO_ARCH, "nb201": NB201_ARCH}
RESULT_FIELDS = {
    "apiVersion", "kind", "status", "validationAccuracy", "bestValidationAccuracy", "reward",
    "parameters", "trainSeconds", "epochs", "dataset", "device",
}


def run_trainer(*args: str) -> subprocess.CompletedProcess:
    """`python -m kubenas_trainer` in a fresh process (KUBENAS_* variables removed)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBENAS_")}
    return subprocess.run(
        [sys.executable, "-m", "kubenas_trainer", *args], env=env, capture_output=True, text=True, timeout=180
    )


def succeeded(proc: subprocess.CompletedProcess, result_file: Path, *, architecture: dict, in_channels: int,
              epochs: int, dataset: str, device: str) -> dict:
    """Check a Succeeded run as the CPU tests do; return its result document."""
    assert proc.returncode == 0, proc.stderr
    text = result_file.read_text()
    assert len(text.encode()) < MAX_BYTES
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == text
    doc = json.loads(text)
    assert set(doc) == RESULT_FIELDS
    assert (doc["apiVersion"], doc["kind"], doc["status"]) == (API_VERSION, "TrialResult", "Succeeded")
    assert (doc["dataset"], doc["device"], doc["epochs"]) == (dataset, device, epochs)
    accuracies = doc["validationAccuracy"]
    assert len(accuracies) == epochs
    assert all(isinstance(value, float | int) and 0 <= value <= 1 for value in accuracies)
    assert doc["bestValidationAccuracy"] == max(accuracies)
    assert doc["reward"] == pytest.approx(max(accuracies[-5:]) ** 3, abs=1e-6)
    assert doc["parameters"] == count_parameters(build_model(architecture, in_channels=in_channels, num_classes=10))
    assert doc["trainSeconds"] > 0 and math.isfinite(doc["trainSeconds"])
    # One progress line per epoch before the document: finite losses, the same accuracies.
    progress = [EPOCH_LINE.match(line) for line in lines[:-1]]
    assert len(progress) == epochs and all(progress), proc.stdout
    for epoch, match in enumerate(progress, start=1):
        assert (int(match[1]), int(match[2])) == (epoch, epochs)
        assert math.isfinite(float(match[3])), f"epoch {epoch}: loss {match[3]}"
        assert float(match[4]) == pytest.approx(accuracies[epoch - 1], abs=1e-4)
    return doc


# --- the CLI, end to end ---------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_cli_learns_digits_on_the_device(tmp_path: Path, name: str):
    architecture = ARCHITECTURES[name]
    result_file = tmp_path / "result.json"
    proc = run_trainer(
        "--architecture", json.dumps(architecture), "--dataset", "digits", "--device", DEVICE,
        "--epochs", "4", "--batch-size", "64", "--result-file", str(result_file),
    )
    doc = succeeded(proc, result_file, architecture=architecture, in_channels=1, epochs=4, dataset="digits", device=DEVICE)
    # Chance is 0.1; both children reach about 0.99 in 4 epochs in fp32 on the CPU.
    assert doc["bestValidationAccuracy"] > 0.85, doc


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_cli_trains_on_cifar_shaped_synthetic_data(tmp_path: Path, name: str):
    architecture = ARCHITECTURES[name]
    result_file = tmp_path / "result.json"
    proc = run_trainer(
        "--architecture", json.dumps(architecture), "--dataset", "synthetic", "--synthetic-samples", "2048",
        "--device", DEVICE, "--epochs", "2", "--batch-size", "128", "--result-file", str(result_file),
    )
    # Random labels: nothing to learn, but every figure must be finite and in range.
    succeeded(proc, result_file, architecture=architecture, in_channels=3, epochs=2, dataset="synthetic", device=DEVICE)


def test_cli_cifar10_with_augmentation_and_auto_device(tmp_path: Path):
    """The cifar10 loader (uint8 copied to the device, normalised there) and the batched
    crop + flip augmentation; `--device auto` (the default) picks CUDA when present."""
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for index in (1, 2):
        write_cifar_batch(folder / f"data_batch_{index}", images=300, seed=index)
    result_file = tmp_path / "result.json"
    args = ["--architecture", json.dumps(MACRO_ARCH), "--dataset", "cifar10", "--data-dir", str(tmp_path),
            "--epochs", "2", "--batch-size", "64", "--result-file", str(result_file)]
    if not ON_CUDA:
        args += ["--device", DEVICE]
    doc = succeeded(run_trainer(*args), result_file, architecture=MACRO_ARCH, in_channels=3, epochs=2,
                    dataset="cifar10", device=DEVICE)
    assert all(value * 60 == pytest.approx(round(value * 60), abs=1e-3) for value in doc["validationAccuracy"])  # 60 images


def test_cli_diverging_child_exits_5_on_the_device(tmp_path: Path):
    result_file = tmp_path / "result.json"
    proc = run_trainer(
        "--architecture", json.dumps(TINY_ARCH), "--device", DEVICE, "--epochs", "2", "--learning-rate", "1e20",
        "--result-file", str(result_file),
    )
    assert proc.returncode == 5, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("kubenas-trainer: Diverged: training loss became")
    doc = json.loads(result_file.read_text())
    assert (doc["status"], doc["reason"]) == ("Failed", "Diverged")


# --- in process: what runs on the device ------------------------------------------------


class Recorder:
    """Forward hooks on every Conv2d, BatchNorm2d and Linear: dtype, layout, device and
    finiteness of what each one read and produced, in training and in evaluation."""

    def __init__(self) -> None:
        self.models: list[nn.Module] = []
        self.calls: list[dict] = []

    def build_model(self, architecture: dict, **kwargs) -> nn.Module:
        model = build_model(architecture, **kwargs)
        for name, module in model.named_modules():
            if isinstance(module, nn.Conv2d | nn.BatchNorm2d | nn.Linear):
                module.register_forward_hook(self._hook(name))
        self.models.append(model)
        return model

    def _hook(self, name: str):
        def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            x = inputs[0]
            self.calls.append(
                {
                    "name": name,
                    "type": type(module).__name__,
                    "training": module.training,
                    "autocast": torch.is_autocast_enabled("cuda"),
                    "input_dtype": x.dtype,
                    "input_format_ok": x.dim() != 4 or x.is_contiguous(memory_format=MEMORY_FORMAT),
                    "output_dtype": output.dtype,
                    "output_format_ok": output.dim() != 4 or output.is_contiguous(memory_format=MEMORY_FORMAT),
                    "device": output.device.type,
                    "finite": bool(torch.isfinite(output).all()),
                }
            )

        return hook


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_training_runs_in_bf16_autocast_and_channels_last(monkeypatch, name: str):
    """What train.py promises on CUDA: the data lives on the device, every convolution,
    BatchNorm and the classifier run in bf16 under autocast (training and evaluation) on
    channels_last activations and weights, the fp32 master weights stay fp32 and finite."""
    architecture = ARCHITECTURES[name]
    recorder = Recorder()
    monkeypatch.setattr(train_module, "build_model", recorder.build_model)
    device = train_module.resolve_device(DEVICE)
    dataset = load_dataset(name="synthetic", data_dir=None, device=device, seed=0, synthetic_samples=600)
    dataset.augment = True  # as for cifar10: the crop + flip runs on the device too
    for tensor in (dataset.train_x, dataset.train_y, dataset.val_x, dataset.val_y):
        assert tensor.device.type == DEVICE
    config = train_module.TrainConfig(epochs=2, batch_size=128, device=DEVICE, eval_batch_size=32)
    doc = train_module.train(architecture=architecture, dataset=dataset, config=config)
    assert (doc["status"], doc["device"], doc["epochs"]) == ("Succeeded", DEVICE, 2)

    (model,) = recorder.models
    assert {call["training"] for call in recorder.calls} == {True, False}  # both passes were seen
    for call in recorder.calls:
        where = f"{call['name']} ({call['type']}, {'train' if call['training'] else 'eval'})"
        assert call["device"] == DEVICE, where
        assert call["autocast"] == ON_CUDA, where
        assert call["output_dtype"] == COMPUTE_DTYPE, f"{where}: output {call['output_dtype']}"
        assert call["finite"], f"{where}: non-finite output"
        assert call["input_format_ok"] and call["output_format_ok"], f"{where}: not {MEMORY_FORMAT}"
        if call["type"] == "Conv2d" and call["name"] not in ("layers.0.conv", "layers.3.conv", "stem.conv"):
            assert call["input_dtype"] == COMPUTE_DTYPE, where  # activations stay bf16 between layers
    convolutions = [module for module in model.modules() if isinstance(module, nn.Conv2d)]
    assert convolutions and all(conv.weight.is_contiguous(memory_format=MEMORY_FORMAT) for conv in convolutions)
    for parameter_name, parameter in model.named_parameters():
        assert parameter.device.type == DEVICE and parameter.dtype == torch.float32, parameter_name
        assert torch.isfinite(parameter).all(), parameter_name
    for buffer_name, buffer in model.named_buffers():
        assert buffer.device.type == DEVICE, buffer_name
        if buffer.is_floating_point():
            assert buffer.dtype == torch.float32 and torch.isfinite(buffer).all(), buffer_name
