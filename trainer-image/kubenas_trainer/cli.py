"""`python -m kubenas_trainer`: architecture JSON in, result JSON out (see README.md).

Every failure becomes a Failed result document in the result file, one line
`kubenas-trainer: <Reason>: <message>` on stderr, and the reason's exit code.
torch is imported only after the flags and the architecture are checked, so `--help`
and bad input answer fast.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import NoReturn

from .architecture import validate_architecture
from .errors import InternalError, InvalidArchitecture, InvalidArguments, OutOfMemory, TrainerError
from .result import failure_result, result_json, write_result

PROG = "kubenas-trainer"
TERMINATION_LOG = "/dev/termination-log"
DATASETS = ("digits", "cifar10", "synthetic")  # = data.DATASETS, repeated to keep torch out of --help
LR_SCHEDULES = ("cosine", "constant", "step")
DEVICES = ("auto", "cpu", "cuda")


class _ArgumentParser(argparse.ArgumentParser):
    """Flag errors raise InvalidArguments (reported like every other failure) instead of exiting."""

    def error(self, message: str) -> NoReturn:
        raise InvalidArguments(message)


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog=PROG,
        description="Train one child network from an architecture JSON document; write a result JSON document.",
    )
    parser.add_argument(
        "--architecture",
        default=os.environ.get("KUBENAS_ARCHITECTURE"),
        help="architecture JSON text, or a path to a file holding it (default: $KUBENAS_ARCHITECTURE)",
    )
    parser.add_argument("--dataset", choices=DATASETS, default="digits", help="dataset (default: %(default)s)")
    parser.add_argument(
        "--data-dir",
        default=os.environ.get("KUBENAS_DATA_DIR") or "/data",
        help="cifar10: the cifar-10-batches-py folder or its parent (default: $KUBENAS_DATA_DIR, else /data)",
    )
    parser.add_argument("--epochs", type=int, default=50, help="training epochs (default: %(default)s, the paper's)")
    parser.add_argument("--batch-size", type=int, default=128, help="training batch size (default: %(default)s)")
    parser.add_argument("--learning-rate", type=float, default=0.1, help="initial SGD learning rate (default: %(default)s)")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default: %(default)s)")
    parser.add_argument("--no-nesterov", action="store_true", help="plain momentum instead of Nesterov's")
    parser.add_argument("--weight-decay", type=float, default=1e-4, help="weight decay (default: %(default)s)")
    parser.add_argument("--lr-schedule", choices=LR_SCHEDULES, default="cosine", help="learning-rate schedule (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICES, default="auto", help="device (default: %(default)s: cuda when available)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--max-train-samples", type=int, default=None, help="train on the first N training images only")
    parser.add_argument("--synthetic-samples", type=int, default=1024, help="synthetic: number of images (default: %(default)s)")
    parser.add_argument(
        "--reward-last-epochs", type=int, default=5, help="reward: max accuracy over the last N epochs (default: %(default)s)"
    )
    parser.add_argument("--reward-power", type=float, default=3.0, help="reward: that accuracy to this power (default: %(default)s)")
    parser.add_argument(
        "--evaluate-test",
        action="store_true",
        default=_env_flag("KUBENAS_EVALUATE_TEST"),
        help="score the final weights on the test split once, at the end: the result gains testAccuracy "
        "(digits: 360 images held out of training; cifar10: test_batch) (default: $KUBENAS_EVALUATE_TEST)",
    )
    parser.add_argument(
        "--save-model",
        metavar="PATH",
        default=os.environ.get("KUBENAS_SAVE_MODEL") or None,
        help="write the final weights' state_dict to PATH (torch.save, atomically) (default: $KUBENAS_SAVE_MODEL)",
    )
    parser.add_argument(
        "--result-file",
        default=default_result_file(),
        help=f"where to write the result JSON (default: $KUBENAS_RESULT_FILE, else {TERMINATION_LOG} when it exists)",
    )
    return parser


def _env_flag(name: str) -> bool:
    """A boolean setting from the environment: 1, true or yes (any case) mean on."""
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes")


def default_result_file() -> str | None:
    if os.environ.get("KUBENAS_RESULT_FILE"):
        return os.environ["KUBENAS_RESULT_FILE"]
    return TERMINATION_LOG if os.path.exists(TERMINATION_LOG) else None


def main(argv: list[str] | None = None) -> int:
    """Run the trainer; return the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    result_file = _result_file_from(argv)
    try:
        args = build_parser().parse_args(argv)
        result_file = args.result_file
        doc = _run(args)
        text = result_json(doc)
        try:
            write_result(doc, path=result_file)
        except OSError as error:
            raise InternalError(f"cannot write result file {result_file!r}: {error}") from None
        print(text, flush=True)
        return 0
    except SystemExit as exit_:  # --help
        return exit_.code if isinstance(exit_.code, int) else 0
    except TrainerError as error:
        return _fail(error, result_file=result_file)
    except Exception as error:
        if type(error).__name__ == "OutOfMemoryError":  # torch's, without importing torch here
            first_line = str(error).split(".")[0]
            return _fail(OutOfMemory(f"{first_line}; try a smaller --batch-size"), result_file=result_file)
        # a bug: keep the traceback for debugging, then report it
        traceback.print_exc(file=sys.stderr)
        return _fail(InternalError(f"{type(error).__name__}: {error}"), result_file=result_file)


def _run(args: argparse.Namespace) -> dict:
    architecture = validate_architecture(_architecture_text(args.architecture))
    if args.synthetic_samples < 2:
        raise InvalidArguments(f"--synthetic-samples: must be >= 2, got {args.synthetic_samples}")

    # Heavy imports only now that the input is known to be good.
    from .data import load_dataset
    from .train import TrainConfig, resolve_device, train

    config = TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        momentum=args.momentum,
        nesterov=not args.no_nesterov,
        weight_decay=args.weight_decay,
        lr_schedule=args.lr_schedule,
        seed=args.seed,
        device=args.device,
        reward_last_epochs=args.reward_last_epochs,
        reward_power=args.reward_power,
        threads=args.threads,
        max_train_samples=args.max_train_samples,
        evaluate_test=args.evaluate_test,
        save_model=args.save_model,
    )
    config.check()  # flag errors before the data is loaded
    device = resolve_device(config.device)
    if config.threads is not None:
        import torch

        torch.set_num_threads(config.threads)  # before loading: data preparation uses threads too
    dataset = load_dataset(
        name=args.dataset,
        data_dir=args.data_dir,
        device=device,
        seed=args.seed,
        synthetic_samples=args.synthetic_samples,
        test=args.evaluate_test,
    )
    return train(architecture=architecture, dataset=dataset, config=config, log=lambda line: print(line, flush=True))


def _architecture_text(value: str | None) -> str:
    """--architecture is JSON text, or else a path to a file holding it."""
    if value is None or not value.strip():
        raise InvalidArchitecture("no architecture: pass --architecture or set KUBENAS_ARCHITECTURE")
    if value.lstrip().startswith("{"):
        return value
    if os.path.isfile(value):
        try:
            with open(value, encoding="utf-8") as file:
                return file.read()
        except (OSError, UnicodeDecodeError) as error:
            raise InvalidArchitecture(f"cannot read architecture file {value!r}: {error}") from None
    raise InvalidArchitecture(f"--architecture: neither a JSON object nor an existing file: {value[:200]!r}")


def _result_file_from(argv: list[str]) -> str | None:
    """The result file, found even when other flags are bad (so a Failed doc can still be written)."""
    parser = _ArgumentParser(add_help=False)
    parser.add_argument("--result-file", default=default_result_file())
    try:
        known, _ = parser.parse_known_args(argv)
    except InvalidArguments:  # e.g. `--result-file` without a value
        return default_result_file()
    return known.result_file


def _fail(error: TrainerError, *, result_file: str | None) -> int:
    try:
        write_result(failure_result(reason=error.reason, message=error.message), path=result_file)
    except OSError:
        pass  # best effort: the stderr line and the exit code still report the failure
    print(f"{PROG}: {error.reason}: {error.message}", file=sys.stderr, flush=True)
    return error.exit_code
