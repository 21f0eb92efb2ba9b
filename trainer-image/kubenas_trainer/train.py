"""Train one child network and score it (Zoph & Le 2017, §4 "Training details").

Every knob is a field of `TrainConfig`; the defaults are the paper's recipe for the CNN
children: SGD with Nesterov momentum 0.9, learning rate 0.1, weight decay 1e-4,
50 epochs, reward = (max validation accuracy of the last 5 epochs)³.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset, augment_batch
from .errors import Diverged, InvalidArguments, ModelNotSaved
from .models import build_model, count_parameters
from .result import success_result

LR_SCHEDULES = ("cosine", "constant", "step")
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class TrainConfig:
    """Training hyper-parameters and run settings (one field per CLI flag)."""

    epochs: int = 50  # passes over the training set (the paper: 50)
    batch_size: int = 128  # training images per SGD step
    learning_rate: float = 0.1  # initial SGD learning rate (the paper: 0.1)
    momentum: float = 0.9  # SGD momentum (the paper: 0.9)
    nesterov: bool = True  # Nesterov momentum (the paper: yes)
    weight_decay: float = 1e-4  # L2 penalty on all parameters (the paper: 1e-4)
    lr_schedule: str = "cosine"  # "cosine" (per step, to 0), "constant", or "step"
    lr_step_milestones: tuple[float, ...] = (0.5, 0.75)  # "step": fractions of training where the lr drops
    lr_step_gamma: float = 0.1  # "step": factor applied at each milestone
    seed: int = 0  # seeds torch: weight init, batch order, augmentation
    device: str = "auto"  # "auto" (cuda when available), "cpu" or "cuda"
    reward_last_epochs: int = 5  # reward window: the last N epochs' validation accuracies
    reward_power: float = 3.0  # reward = max(window) ** power (the paper: 3)
    threads: int | None = None  # torch CPU threads; None leaves torch's default
    max_train_samples: int | None = None  # use only the first N training images (quick tests)
    eval_batch_size: int = 1024  # validation batch size (no gradients, so larger)
    evaluate_test: bool = False  # score the final weights on the test split once, at the end (retraining)
    save_model: str | None = None  # write the final weights' state_dict here (torch.save, atomically)

    def check(self) -> None:
        """Raise InvalidArguments naming the first out-of-range field."""
        positive_ints = {
            "epochs": self.epochs,
            "batch_size": self.batch_size,
            "reward_last_epochs": self.reward_last_epochs,
            "eval_batch_size": self.eval_batch_size,
        }
        for name, value in positive_ints.items():
            if value < 1:
                raise InvalidArguments(f"{name}: must be >= 1, got {value}")
        for name, value in {"threads": self.threads, "max_train_samples": self.max_train_samples}.items():
            if value is not None and value < 1:
                raise InvalidArguments(f"{name}: must be >= 1, got {value}")
        if not (self.learning_rate > 0 and math.isfinite(self.learning_rate)):
            raise InvalidArguments(f"learning_rate: must be a positive number, got {self.learning_rate}")
        for name, value in {"momentum": self.momentum, "weight_decay": self.weight_decay}.items():
            if not (value >= 0 and math.isfinite(value)):
                raise InvalidArguments(f"{name}: must be >= 0, got {value}")
        if self.nesterov and self.momentum == 0:
            raise InvalidArguments("nesterov: needs momentum > 0 (or disable Nesterov)")
        if not (self.reward_power > 0 and math.isfinite(self.reward_power)):
            raise InvalidArguments(f"reward_power: must be a positive number, got {self.reward_power}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise InvalidArguments(f"lr_schedule: must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if self.device not in DEVICES:
            raise InvalidArguments(f"device: must be one of {', '.join(DEVICES)}, got {self.device!r}")


def resolve_device(name: str) -> torch.device:
    """`auto` -> cuda when available, else cpu; asking for an absent cuda is an argument error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise InvalidArguments("device: cuda requested but CUDA is not available")
    return torch.device(name)


def train(
    *,
    architecture: dict,
    dataset: Dataset,
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Train `architecture` on `dataset`; return the Succeeded result document.

    `log` receives one short progress line per epoch. Raises Diverged when the training
    loss becomes NaN or infinite.
    """
    config.check()
    device = dataset.train_x.device
    on_cuda = device.type == "cuda"
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    torch.manual_seed(config.seed)  # also seeds every CUDA device
    if on_cuda:
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels

    train_x, train_y = dataset.train_x, dataset.train_y
    if config.max_train_samples is not None:
        train_x, train_y = train_x[: config.max_train_samples], train_y[: config.max_train_samples]
    memory_format = torch.channels_last if on_cuda else torch.contiguous_format

    model = build_model(architecture, in_channels=dataset.in_channels, num_classes=dataset.num_classes)
    model = model.to(device=device, memory_format=memory_format)
    parameters = count_parameters(model)
    optimizer = SGD(
        list(model.parameters()),
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )
    steps_per_epoch = _steps_per_epoch(len(train_x), config.batch_size)
    lr_factor = _lr_factor(config, total_steps=config.epochs * steps_per_epoch)

    accuracies: list[float] = []
    started = time.perf_counter()
    for epoch in range(config.epochs):
        model.train()
        # Summed on the device and read once per epoch: no host sync per step on CUDA.
        loss_sum = torch.zeros((), dtype=torch.float64, device=device)
        order = torch.randperm(len(train_x), device=device)
        for step in range(steps_per_epoch):
            global_step = epoch * steps_per_epoch + step
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            images, labels = train_x[index], train_y[index]
            if dataset.augment:
                images = augment_batch(images)
            images = images.contiguous(memory_format=memory_format)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
                loss = F.cross_entropy(model(images), labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step(lr=config.learning_rate * lr_factor(global_step))
            loss_sum += loss.detach()
        mean_loss = loss_sum.item() / steps_per_epoch
        if not math.isfinite(mean_loss):
            raise Diverged(f"training loss became {mean_loss} in epoch {epoch + 1} (learning rate {config.learning_rate:g})")
        accuracies.append(
            evaluate(model, dataset.val_x, dataset.val_y, batch_size=config.eval_batch_size, memory_format=memory_format)
        )
        if log is not None:
            log(
                f"epoch {epoch + 1}/{config.epochs} loss {mean_loss:.4f} "
                f"val_acc {accuracies[-1]:.4f} {time.perf_counter() - started:.1f}s"
            )
    train_seconds = time.perf_counter() - started
    test_accuracy = None
    if config.evaluate_test:
        if dataset.test_x is None or dataset.test_y is None:
            raise InvalidArguments("evaluate_test: the dataset was loaded without its test split")
        test_accuracy = evaluate(model, dataset.test_x, dataset.test_y, batch_size=config.eval_batch_size,
                                 memory_format=memory_format)
        if log is not None:
            log(f"test_acc {test_accuracy:.4f} ({len(dataset.test_x)} images)")
    if config.save_model:
        save_state_dict(model, config.save_model)

    return success_result(
        validation_accuracy=accuracies,
        reward_last_epochs=config.reward_last_epochs,
        reward_power=config.reward_power,
        parameters=parameters,
        train_seconds=train_seconds,
        dataset=dataset.name,
        device=device.type,
        test_accuracy=test_accuracy,
    )


def save_state_dict(model: nn.Module, path: str) -> None:
    """The model's state_dict (CPU, contiguous tensors) at `path`, atomically: a reader
    never sees half a file, and a kill mid-write leaves the previous file (if any)."""
    state = {key: value.detach().to("cpu").contiguous() for key, value in model.state_dict().items()}
    temporary = f"{path}.tmp{os.getpid()}"
    try:
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        with open(temporary, "wb") as handle:
            torch.save(state, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise ModelNotSaved(f"cannot write the model to {path!r}: {error.strerror or error}") from None


class SGD:
    """SGD with (Nesterov) momentum and L2 weight decay, the same update as
    `torch.optim.SGD(dampening=0)`, in a few `_foreach` ops.

    Why not torch.optim: constructing any torch.optim optimizer imports torch._dynamo,
    about 1.4 s of start-up on every trial, longer than training a small digits child.
    """

    def __init__(self, parameters: list[nn.Parameter], *, momentum: float, nesterov: bool, weight_decay: float) -> None:
        self.parameters = parameters
        self.momentum = momentum
        self.nesterov = nesterov
        self.weight_decay = weight_decay
        # Zero buffers: m * 0 + g equals torch's first-step initialisation (buffer = g).
        self.buffers = [torch.zeros_like(parameter) for parameter in parameters] if momentum else []

    def zero_grad(self) -> None:
        for parameter in self.parameters:
            parameter.grad = None

    @torch.no_grad()
    def step(self, *, lr: float) -> None:
        with_grad = [index for index, parameter in enumerate(self.parameters) if parameter.grad is not None]
        params = [self.parameters[index] for index in with_grad]
        grads = [parameter.grad for parameter in params]
        if self.weight_decay:
            grads = torch._foreach_add(grads, params, alpha=self.weight_decay)  # g + wd * w
        if self.momentum:
            buffers = [self.buffers[index] for index in with_grad]
            torch._foreach_mul_(buffers, self.momentum)
            torch._foreach_add_(buffers, grads)  # b = m * b + g
            # Nesterov steps along g + m * b, plain momentum along b.
            grads = torch._foreach_add(grads, buffers, alpha=self.momentum) if self.nesterov else buffers
        torch._foreach_add_(params, grads, alpha=-lr)


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    batch_size: int,
    memory_format: torch.memory_format = torch.contiguous_format,
) -> float:
    """Top-1 accuracy in [0, 1] (BatchNorm in eval mode, running statistics)."""
    model.eval()
    on_cuda = images.device.type == "cuda"
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size].contiguous(memory_format=memory_format)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=on_cuda):
            logits = model(batch)
        correct += (logits.argmax(dim=1) == labels[start : start + batch_size]).sum()
    return correct.item() / len(images)


def _steps_per_epoch(samples: int, batch_size: int) -> int:
    steps = math.ceil(samples / batch_size)
    # A last batch of one image would make BatchNorm fail on 1×1 maps; drop it.
    if steps > 1 and samples % batch_size == 1:
        steps -= 1
    return steps


def _lr_factor(config: TrainConfig, *, total_steps: int) -> Callable[[int], float]:
    """Multiplier of the initial learning rate after `step` optimizer steps."""
    if config.lr_schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))
    if config.lr_schedule == "step":
        boundaries = [int(fraction * total_steps) for fraction in config.lr_step_milestones]
        return lambda step: config.lr_step_gamma ** sum(step >= boundary for boundary in boundaries)
    return lambda step: 1.0
