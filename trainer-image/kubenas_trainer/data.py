"""Datasets as tensors already on the training device (no DataLoader, airbench style).

- `digits`: scikit-learn's bundled 8×8 digits (no download), a fixed 360-image validation split.
  With `test=True` (`--evaluate-test`, retraining) a fixed 360-image test split is held
  out of the training images as well: disjoint from both, and the search's own
  train/validation split (test=False) is unchanged.
- `cifar10`: the standard `cifar-10-batches-py` pickles; the data batches, the last
  5,000 images held out for validation (45k/5k as in Zoph & Le); `test_batch` only with
  `test=True`. Random crop + flip augmentation per batch with tensor ops.
- `synthetic`: random images and labels, for speed tests.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .errors import DataNotFound, InvalidArguments

DATASETS = ("digits", "cifar10", "synthetic")

# The digits split must not move with the training seed: every child of a search is
# scored on the same validation images.
DIGITS_SPLIT_SEED = 20170101
DIGITS_VALIDATION_SIZE = 360
DIGITS_TEST_SIZE = 360  # taken from the end of the training split, only when a test split is asked for

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
CIFAR10_TEST_BATCH = "test_batch"
CIFAR10_VALIDATION_SIZE = 5000
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CROP_PADDING = 4


@dataclass
class Dataset:
    """Train and validation tensors (images NCHW float32, labels int64) on one device."""

    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    in_channels: int
    image_size: tuple[int, int]  # (height, width)
    augment: bool  # whether training batches get random crop + horizontal flip
    test_x: torch.Tensor | None = None  # the test split, loaded only when asked for (retraining)
    test_y: torch.Tensor | None = None


def load_dataset(
    *,
    name: str,
    data_dir: str | None,
    device: torch.device,
    seed: int,
    synthetic_samples: int = 1024,
    synthetic_shape: tuple[int, int, int] = (3, 32, 32),
    synthetic_classes: int = 10,
    test: bool = False,
) -> Dataset:
    """Load `name` onto `device`. `seed` only affects the synthetic data; the digits and
    CIFAR-10 splits are fixed. `test`: also load the test split (`test_x`, `test_y`)."""
    if name == "digits":
        return _load_digits(device=device, test=test)
    if name == "cifar10":
        if not data_dir:
            raise DataNotFound("cifar10 needs a data directory (--data-dir or KUBENAS_DATA_DIR)")
        return _load_cifar10(data_dir=Path(data_dir), device=device, test=test)
    if name == "synthetic":
        return _make_synthetic(
            samples=synthetic_samples, shape=synthetic_shape, classes=synthetic_classes, seed=seed, device=device,
            test=test,
        )
    raise InvalidArguments(f"unknown dataset {name!r} (one of {', '.join(DATASETS)})")


def augment_batch(images: torch.Tensor, *, padding: int = CROP_PADDING) -> torch.Tensor:
    """Random crop (zero padding of `padding` pixels, i.e. the mean after normalisation)
    and random horizontal flip, independently per image, as a few batched tensor ops."""
    batch, _, height, width = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    device = images.device
    # Per-image offsets of the crop window inside the padded image.
    top = torch.randint(0, 2 * padding + 1, (batch,), device=device)
    left = torch.randint(0, 2 * padding + 1, (batch,), device=device)
    rows = top[:, None] + torch.arange(height, device=device)  # (B, H)
    cols = left[:, None] + torch.arange(width, device=device)  # (B, W)
    flip = torch.rand(batch, device=device) < 0.5
    # A flip reverses which padded columns each output column reads.
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch_index = torch.arange(batch, device=device)[:, None, None]
    # Advanced indexing around the channel slice gives (B, H, W, C); back to NCHW.
    cropped = padded[batch_index, :, rows[:, :, None], cols[:, None, :]]
    return cropped.permute(0, 3, 1, 2)


def _load_digits(*, device: torch.device, test: bool = False) -> Dataset:
    from sklearn.datasets import load_digits  # bundled with scikit-learn, no download

    digits = load_digits()
    images = digits.data.astype(np.float32) / 16.0  # pixel values are 0..16
    labels = digits.target.astype(np.int64)
    order = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(len(images))
    val_index, train_index = order[:DIGITS_VALIDATION_SIZE], order[DIGITS_VALIDATION_SIZE:]
    # Standardise with the training split's statistics (one scalar: corner pixels are constant).
    mean, std = images[train_index].mean(), images[train_index].std()
    images = ((images - mean) / std).reshape(-1, 1, 8, 8)
    test_index = None
    if test:  # held out of training too; the statistics above stay the search's, so inputs match
        train_index, test_index = train_index[:-DIGITS_TEST_SIZE], train_index[-DIGITS_TEST_SIZE:]

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(array).to(device)

    return Dataset(
        name="digits",
        train_x=tensor(images[train_index]),
        train_y=tensor(labels[train_index]),
        val_x=tensor(images[val_index]),
        val_y=tensor(labels[val_index]),
        num_classes=10,
        in_channels=1,
        image_size=(8, 8),
        augment=False,
        test_x=None if test_index is None else tensor(images[test_index]),
        test_y=None if test_index is None else tensor(labels[test_index]),
    )


def _cifar10_batch_dir(data_dir: Path) -> Path:
    """Accept the `cifar-10-batches-py` folder itself or its parent."""
    for candidate in (data_dir / CIFAR10_FOLDER, data_dir):
        if (candidate / CIFAR10_BATCHES[0]).is_file():
            return candidate
    if not data_dir.is_dir():
        raise DataNotFound(f"cifar10: no such directory {str(data_dir)!r}")
    raise DataNotFound(
        f"cifar10: no {CIFAR10_BATCHES[0]} in {str(data_dir)!r} or {str(data_dir / CIFAR10_FOLDER)!r}"
    )


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists, dicts and strings only: a data volume must not be
    able to run code in the trainer through a crafted pickle."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("_codecs", "encode"),  # protocol-2 pickles of bytes made by Python 3
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}")


def _read_cifar10_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as file:
            batch = _ArrayUnpickler(file, encoding="bytes").load()
        data = np.asarray(batch.get(b"data", batch.get("data")))
        labels = np.asarray(batch.get(b"labels", batch.get("labels")), dtype=np.int64)
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as error:
        raise DataNotFound(f"cifar10: cannot read {str(path)!r}: {error}") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataNotFound(f"cifar10: {str(path)!r}: data must be uint8 of shape (N, 3072), got {data.dtype} {data.shape}")
    if labels.shape != (len(data),) or (len(labels) and (labels.min() < 0 or labels.max() > 9)):
        raise DataNotFound(f"cifar10: {str(path)!r}: labels must be {len(data)} integers in 0..9")
    return data, labels


def _load_cifar10(*, data_dir: Path, device: torch.device, test: bool = False) -> Dataset:
    batch_dir = _cifar10_batch_dir(data_dir)
    present = [name for name in CIFAR10_BATCHES if (batch_dir / name).is_file()]
    # The batches in use must be data_batch_1..k: a gap means a broken copy, not a smaller set.
    expected = list(CIFAR10_BATCHES[: len(present)])
    if present != expected:
        missing = next(name for name in expected if name not in present)
        raise DataNotFound(f"cifar10: {str(batch_dir / missing)!r} is missing")
    parts = [_read_cifar10_batch(batch_dir / name) for name in present]
    data = np.concatenate([data for data, _ in parts])
    labels = np.concatenate([labels for _, labels in parts])
    if len(data) < 2:
        raise DataNotFound(f"cifar10: {str(batch_dir)!r} holds {len(data)} image(s); need at least 2")
    val_size = CIFAR10_VALIDATION_SIZE if len(data) >= 50_000 else max(1, len(data) // 10)

    test_x = test_y = None
    if test:
        if not (batch_dir / CIFAR10_TEST_BATCH).is_file():
            raise DataNotFound(f"cifar10: {str(batch_dir / CIFAR10_TEST_BATCH)!r} is missing (needed by --evaluate-test)")
        test_data, test_labels = _read_cifar10_batch(batch_dir / CIFAR10_TEST_BATCH)
        if len(test_data) < 1:
            raise DataNotFound(f"cifar10: {str(batch_dir / CIFAR10_TEST_BATCH)!r} holds no image")
        test_x, test_y = _cifar10_images(test_data, device=device), torch.from_numpy(test_labels).to(device)
    images = _cifar10_images(data, device=device)
    targets = torch.from_numpy(labels).to(device)
    return Dataset(
        name="cifar10",
        train_x=images[:-val_size],
        train_y=targets[:-val_size],
        val_x=images[-val_size:],
        val_y=targets[-val_size:],
        num_classes=10,
        in_channels=3,
        image_size=(32, 32),
        augment=True,
        test_x=test_x,
        test_y=test_y,
    )


def _cifar10_images(data: np.ndarray, *, device: torch.device) -> torch.Tensor:
    """uint8 (N, 3072) -> normalised float NCHW: converted on the device (4x less to copy)."""
    images = torch.from_numpy(data).to(device).view(-1, 3, 32, 32).float().div_(255)
    mean = torch.tensor(CIFAR10_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD, device=device).view(1, 3, 1, 1)
    return (images - mean) / std


def _make_synthetic(
    *, samples: int, shape: tuple[int, int, int], classes: int, seed: int, device: torch.device, test: bool = False
) -> Dataset:
    if samples < 2:
        raise InvalidArguments(f"--synthetic-samples: must be >= 2, got {samples}")
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn((samples, *shape), generator=generator)
    labels = torch.randint(0, classes, (samples,), generator=generator)
    val_size = max(1, samples // 10)
    # The test images come after the others from the same generator: the rest are unchanged.
    test_x = torch.randn((val_size, *shape), generator=generator).to(device) if test else None
    test_y = torch.randint(0, classes, (val_size,), generator=generator).to(device) if test else None
    return Dataset(
        name="synthetic",
        train_x=images[:-val_size].to(device),
        train_y=labels[:-val_size].to(device),
        val_x=images[-val_size:].to(device),
        val_y=labels[-val_size:].to(device),
        num_classes=classes,
        in_channels=shape[0],
        image_size=(shape[1], shape[2]),
        augment=False,
        test_x=test_x,
        test_y=test_y,
    )
