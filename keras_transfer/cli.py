"""The `keras-transfer` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import keras

from keras_transfer.demo import DEFAULT_EPOCHS, DEFAULT_TRAIN_SIZE, run_demo

_PROG = "keras-transfer"

# `--quick`: a tiny setting that checks the whole pipeline in seconds.
_QUICK = {"epochs": 2, "train_size": 20, "pretrain_epochs": 1, "pretrain_size": 500}


class _UsageError(Exception):
    """A command-line mistake, reported in one line instead of a usage dump."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `keras-transfer` command line and returns its exit status.

    Subcommands:
        demo: pretrain a small CNN on MNIST-5k, fine-tune it on 100 of
            scikit-learn's 8x8 digits with gradual unfreezing and
            discriminative learning rates, compare with training from
            scratch, and print a table of test accuracies and times.

    Mistakes in the arguments or settings print one line,
    `keras-transfer: error: ...`, and return a non-zero status.

    Args:
        argv: the arguments, without the program name; defaults to
            `sys.argv[1:]`.

    Example:

    >>> from keras_transfer.cli import main
    >>> main(["demo", "--epochs", "0"])
    2
    """
    try:
        args = _build_parser().parse_args(argv)
        return args.handler(args)
    except _UsageError as error:
        return _fail(error, status=2)
    except (ValueError, TypeError, ImportError, FileNotFoundError) as error:
        return _fail(error, status=1)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_PROG, description="Transfer learning for Keras 3.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="transfer a small CNN from MNIST-5k to 8x8 digits and compare with scratch",
        description=(
            "Pretrains a small CNN on MNIST-5k, fine-tunes it on a few labelled 8x8 "
            "digits with kt.FreezeSchedule.gradual and kt.DiscriminativeLR, trains the "
            "same CNN from scratch on the same digits, and prints their test accuracies. "
            "The backend comes from the KERAS_BACKEND environment variable."
        ),
    )
    demo.add_argument("--epochs", type=_positive_int, help="epochs on the digits (default 10)")
    demo.add_argument(
        "--train-size", type=_positive_int, help="labelled digits to train on (default 100)"
    )
    demo.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--quick", action="store_true", help="a tiny setting that runs in seconds (for tests)"
    )
    demo.set_defaults(handler=_run_demo)
    return parser


def _run_demo(args) -> int:
    print(f"keras-transfer demo on the {keras.backend.backend()} backend")
    run_demo(seed=args.seed, **_demo_settings(args))
    return 0


def _demo_settings(args) -> dict:
    """`--quick` changes the defaults; explicit options win over both."""
    settings = {"epochs": DEFAULT_EPOCHS, "train_size": DEFAULT_TRAIN_SIZE}
    if args.quick:
        settings.update(_QUICK)
    for name in ("epochs", "train_size"):
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    return settings


def _positive_int(text: str) -> int:
    return _bounded_int(text, minimum=1, what="a positive integer")


def _non_negative_int(text: str) -> int:
    return _bounded_int(text, minimum=0, what="an integer >= 0")


def _bounded_int(text: str, minimum: int, what: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return value


def _fail(error: Exception, status: int) -> int:
    message = " ".join(str(error).split())
    print(f"{_PROG}: error: {message}", file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
