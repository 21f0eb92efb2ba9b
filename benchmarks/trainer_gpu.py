"""What one child costs on one device: the trainer's own training loop (kubenas_trainer.train,
the same code `python -m kubenas_trainer` runs) on CIFAR-shaped synthetic data.

    PYTHONPATH=trainer-image python3 benchmarks/trainer_gpu.py                  # the GPU (cuda when present)
    PYTHONPATH=trainer-image .venv/bin/python benchmarks/trainer_gpu.py --device cpu --quick   # smoke check, < 1 min

Measured, in this order (each figure printed as soon as it is known):

- start-up: seconds to `import torch`, and to initialise CUDA (first tensor on the device);
- a cold CLI trial: wall seconds of a whole `python -m kubenas_trainer` process (Python,
  imports, CUDA init, data, cuDNN autotuning) training the paper-sized MacroCNN child for
  one epoch of 256 images: the fixed cost every trial pays on top of its epochs;
- for each child and batch size (a paper-sized MacroCNN: 15 layers at 32x32, 36-64
  filters, 1x1-7x7 kernels, random skip connections; NAS-Bench-201's largest cell network,
  every edge nor_conv_3x3, 16 channels, 5 cells per stage; batch sizes 128 and 512):
  parameters and forward GFLOP per image; time to first step (model build and transfer,
  then the first SGD step, cuDNN autotuning included); then `train()` for 2 epochs on
  45,000 training / 5,000 validation images resident on the device with the cifar10
  crop + flip augmentation on: the first epoch (more autotuning: last partial batch,
  evaluation shapes), the steady epoch (training + validation, as the trainer does it),
  the validation pass alone, training images/s and achieved TFLOP/s (3x forward FLOPs per
  training image), and peak device memory (`torch.cuda.max_memory_allocated`, the resident
  data set included, its size shown apart);
- what 50 epochs (the paper's) take for one child: the first epoch + 49 steady epochs.

`--budget-seconds` skips the remaining runs once spent, so a slow device still prints
what it measured in time. Synthetic data: the speed of CIFAR-10 itself, not its accuracy.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
API_VERSION = "kubenas.io/v1alpha1"
PAPER_EPOCHS = 50


def macro_architecture(*, layers: int, filters: tuple[int, ...], kernels: tuple[int, ...], seed: int = 0) -> dict:
    """A MacroCNN child like the paper's 15-layer ones: stride 1 throughout, kernel height
    and width drawn apart, each layer reads the previous one plus each earlier one with
    probability 0.25 (a random skip-connection pattern); seeded, so always the same child."""
    rng = random.Random(seed)
    doc = []
    for index in range(layers):
        skips = {source for source in range(index - 1) if rng.random() < 0.25}
        doc.append(
            {
                "filterHeight": rng.choice(kernels),
                "filterWidth": rng.choice(kernels),
                "numFilters": rng.choice(filters),
                "strideHeight": 1,
                "strideWidth": 1,
                "inputs": sorted(skips | {index - 1}) if index else [],
            }
        )
    return {"apiVersion": API_VERSION, "kind": "MacroCNN", "layers": doc}


def nb201_architecture(*, edges: list[str], channels: int, cells_per_stage: int) -> dict:
    from kubenas_trainer.architecture import cell_string

    return {
        "apiVersion": API_VERSION,
        "kind": "NB201Cell",
        "cell": cell_string(edges),
        "edges": edges,
        "channels": channels,
        "cellsPerStage": cells_per_stage,
    }


def forward_flops(model, image_shape: tuple[int, int, int]) -> float:
    """Multiply-adds x 2 of every Conv2d and Linear for one image (other layers ignored)."""
    import torch
    from torch import nn

    total = 0.0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += 2.0 * output.numel() * (module.in_channels // module.groups) * kh * kw
        else:
            total += 2.0 * module.in_features * module.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        model(torch.zeros((1, *image_shape), device=device))
    model.train(was_training)
    for handle in handles:
        handle.remove()
    return total


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cold_cli_trial(architecture: dict, *, device: str, batch_size: int, samples: int) -> str:
    """Wall seconds of one whole trainer process (one epoch on `samples` synthetic images)."""
    with tempfile.TemporaryDirectory() as folder:
        result_file = Path(folder) / "result.json"
        env = {key: value for key, value in os.environ.items() if not key.startswith("KUBENAS_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "trainer-image"), env.get("PYTHONPATH")]))
        started = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "kubenas_trainer", "--architecture", json.dumps(architecture),
             "--dataset", "synthetic", "--synthetic-samples", str(samples), "--epochs", "1",
             "--batch-size", str(batch_size), "--device", device, "--result-file", str(result_file)],
            env=env, capture_output=True, text=True, timeout=300,
        )
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            return f"FAILED (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1:]}"
        doc = json.loads(result_file.read_text())
        return f"{wall:.2f} s wall ({doc['trainSeconds']:.2f} s of it in train(), device {doc['device']})"


def measure(name: str, architecture: dict, *, dataset, batch_size: int, epochs: int, device, log) -> dict:
    """Time to first step, then `train()` for `epochs` epochs; print and return the figures."""
    import torch
    import torch.nn.functional as F

    import kubenas_trainer.train as trainer
    from kubenas_trainer.architecture import validate_architecture
    from kubenas_trainer.data import augment_batch
    from kubenas_trainer.models import build_model, count_parameters

    architecture = validate_architecture(architecture)
    on_cuda = device.type == "cuda"
    memory_format = torch.channels_last if on_cuda else torch.contiguous_format
    if on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        torch.backends.cudnn.benchmark = True  # as train() does
    torch.manual_seed(0)
    figures: dict = {"name": name, "batch_size": batch_size}

    # Time to first step: build, move, one SGD step (cuDNN autotunes this shape here).
    started = time.perf_counter()
    model = build_model(architecture, in_channels=dataset.in_channels, num_classes=dataset.num_classes)
    model = model.to(device=device, memory_format=memory_format)
    sync(device)
    figures["build_s"] = time.perf_counter() - started
    figures["parameters"] = count_parameters(model)
    optimizer = trainer.SGD(list(model.parameters()), momentum=0.9, nesterov=True, weight_decay=1e-4)
    model.train()
    started = time.perf_counter()
    index = torch.randperm(len(dataset.train_x), device=device)[:batch_size]
    images = augment_batch(dataset.train_x[index]).contiguous(memory_format=memory_format)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
        loss = F.cross_entropy(model(images), dataset.train_y[index])
    optimizer.zero_grad()
    loss.backward()
    optimizer.step(lr=0.1)
    sync(device)
    figures["first_step_s"] = time.perf_counter() - started
    # The validation pass alone (once to autotune its shapes, then timed).
    trainer.evaluate(model, dataset.val_x, dataset.val_y, batch_size=1024, memory_format=memory_format)
    started = time.perf_counter()
    trainer.evaluate(model, dataset.val_x, dataset.val_y, batch_size=1024, memory_format=memory_format)
    figures["eval_s"] = time.perf_counter() - started
    # After the timed steps, so that the first step pays the cuDNN and cuBLAS set-up it would pay.
    figures["gflop_per_image"] = forward_flops(model, (dataset.in_channels, *dataset.image_size)) / 1e9
    log(
        f"  {name} batch {batch_size}: {figures['parameters']:,} parameters, {figures['gflop_per_image']:.3f} GFLOP/image "
        f"forward; model build {figures['build_s']:.3f} s, first step {figures['first_step_s']:.3f} s, "
        f"validation pass ({len(dataset.val_x):,} images) {figures['eval_s']:.3f} s"
    )
    del model, optimizer, images, loss
    if on_cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)

    # The trainer's own loop; one timestamp per epoch (each log line comes after a host sync).
    stamps: list[float] = []
    config = trainer.TrainConfig(epochs=epochs, batch_size=batch_size, device=device.type)
    started = time.perf_counter()
    doc = trainer.train(
        architecture=architecture, dataset=dataset, config=config, log=lambda line: stamps.append(time.perf_counter())
    )
    epoch_s = [later - earlier for earlier, later in zip([started, *stamps], stamps)]
    figures["first_epoch_s"] = epoch_s[0]
    figures["steady_epoch_s"] = statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else epoch_s[0]
    train_only = max(figures["steady_epoch_s"] - figures["eval_s"], 1e-9)
    figures["images_per_s"] = len(dataset.train_x) / train_only
    figures["tflops"] = 3 * figures["gflop_per_image"] * figures["images_per_s"] / 1e3
    figures["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if on_cuda else None
    figures["paper_s"] = figures["first_epoch_s"] + (PAPER_EPOCHS - 1) * figures["steady_epoch_s"]
    figures["accuracy"] = doc["validationAccuracy"]
    peak = f"{figures['peak_gib']:.2f} GiB" if on_cuda else "n/a on cpu"
    log(
        f"  {name} batch {batch_size}: epoch 1 {figures['first_epoch_s']:.2f} s, steady epoch "
        f"{figures['steady_epoch_s']:.2f} s (train {train_only:.2f} s + validation {figures['eval_s']:.2f} s), "
        f"{figures['images_per_s']:,.0f} train images/s, {figures['tflops']:.2f} TFLOP/s achieved, "
        f"peak memory {peak}; {PAPER_EPOCHS} epochs ~ {figures['paper_s']:.0f} s ({figures['paper_s'] / 60:.1f} min)"
    )
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--quick", action="store_true", help="tiny children and data: a smoke check (CPU: < 1 min)")
    parser.add_argument("--epochs", type=int, default=2, help="train() epochs per run: the first, then steady ones (default: 2)")
    parser.add_argument("--batch-sizes", default="128,512", help="comma-separated (default: 128,512)")
    parser.add_argument("--budget-seconds", type=float, default=150, help="skip the remaining runs after this long (default: 150)")
    parser.add_argument("--no-cli", action="store_true", help="skip the cold CLI trial")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")
    begun = time.perf_counter()

    def log(line: str) -> None:
        print(line, flush=True)

    started = time.perf_counter()
    import torch

    import_s = time.perf_counter() - started
    sys.path.append(str(ROOT / "trainer-image"))  # when PYTHONPATH does not name it already
    from kubenas_trainer.data import load_dataset
    from kubenas_trainer.train import resolve_device

    device = resolve_device(args.device)
    log(f"torch {torch.__version__}, python {sys.version.split()[0]}, import torch {import_s:.2f} s")
    if device.type == "cuda":
        started = time.perf_counter()
        torch.empty(1, device=device)
        torch.cuda.synchronize(device)
        properties = torch.cuda.get_device_properties(device)
        log(
            f"device: {torch.cuda.get_device_name(device)} ({properties.total_memory / 2**30:.0f} GiB, "
            f"capability {properties.major}.{properties.minor}), cuDNN {torch.backends.cudnn.version()}, "
            f"CUDA init {time.perf_counter() - started:.2f} s"
        )
    else:
        log(f"device: cpu, {torch.get_num_threads()} torch threads")

    batch_sizes = [int(value) for value in args.batch_sizes.split(",")]
    if args.quick:
        macro = macro_architecture(layers=4, filters=(8, 12), kernels=(1, 3, 5))
        nb201 = nb201_architecture(edges=["nor_conv_3x3"] * 6, channels=4, cells_per_stage=1)
        samples, batch_sizes = 640, [max(8, size // 4) for size in batch_sizes]
        cli_samples = 64
    else:
        macro = macro_architecture(layers=15, filters=(36, 48, 64), kernels=(1, 3, 5, 7))
        nb201 = nb201_architecture(edges=["nor_conv_3x3"] * 6, channels=16, cells_per_stage=5)
        samples, cli_samples = 50_000, 256
    children = {
        f"MacroCNN-{len(macro['layers'])}": macro,
        f"NB201-C{nb201['channels']}-N{nb201['cellsPerStage']}": nb201,
    }
    log(f"MacroCNN child: {json.dumps(macro['layers'])}")
    log(f"NB201 child: {nb201['cell']}, channels {nb201['channels']}, {nb201['cellsPerStage']} cells per stage")

    if not args.no_cli:
        log(f"cold CLI trial ({next(iter(children))}, 1 epoch of {cli_samples - cli_samples // 10} images): "
            + cold_cli_trial(macro, device=device.type, batch_size=min(batch_sizes), samples=cli_samples))

    started = time.perf_counter()
    dataset = load_dataset(name="synthetic", data_dir=None, device=device, seed=0, synthetic_samples=samples)
    dataset.augment = True  # as cifar10: crop + flip per batch on the device
    sync(device)
    data_gib = sum(t.numel() * t.element_size() for t in (dataset.train_x, dataset.train_y, dataset.val_x, dataset.val_y)) / 2**30
    log(
        f"data: {len(dataset.train_x):,} train / {len(dataset.val_x):,} validation images {tuple(dataset.train_x.shape[1:])}, "
        f"{data_gib:.2f} GiB resident on {device.type}, made and moved in {time.perf_counter() - started:.2f} s"
    )

    results = []
    # Both children at the first batch size before either at the second: the figures that
    # matter most come first if the budget runs out.
    for batch_size in batch_sizes:
        for name, architecture in children.items():
            if time.perf_counter() - begun > args.budget_seconds:
                log(f"  {name} batch {batch_size}: skipped (over --budget-seconds {args.budget_seconds:g})")
                continue
            try:
                results.append(measure(name, architecture, dataset=dataset, batch_size=batch_size,
                                       epochs=args.epochs, device=device, log=log))
            except torch.cuda.OutOfMemoryError as error:
                log(f"  {name} batch {batch_size}: out of device memory: {str(error).splitlines()[0]}")
                torch.cuda.empty_cache()

    log("")
    log(f"summary ({device.type}; {len(dataset.train_x):,} train images per epoch, validation on {len(dataset.val_x):,}):")
    log(f"{'child':<18}{'batch':>6}{'params':>11}{'1st step s':>11}{'epoch1 s':>10}{'epoch s':>9}"
        f"{'img/s':>9}{'TFLOP/s':>9}{'peak GiB':>9}{'50 ep min':>10}")
    for row in results:
        peak = f"{row['peak_gib']:.2f}" if row["peak_gib"] is not None else "-"
        log(f"{row['name']:<18}{row['batch_size']:>6}{row['parameters']:>11,}{row['build_s'] + row['first_step_s']:>11.2f}"
            f"{row['first_epoch_s']:>10.2f}{row['steady_epoch_s']:>9.2f}{row['images_per_s']:>9,.0f}"
            f"{row['tflops']:>9.2f}{peak:>9}{row['paper_s'] / 60:>10.1f}")
    log(f"total {time.perf_counter() - begun:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
