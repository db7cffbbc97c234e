"""The `keras-transfer` command line."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import keras

from keras_transfer._checks import check_number
from keras_transfer.demo import DEFAULT_OUTPUT_DIR, run_demo

_PROG = "keras-transfer"

# `--quick`: a tiny setting that checks the whole pipeline in seconds. The head
# keeps its 5 epochs: on cached features they cost milliseconds.
_QUICK = {"train_size": 40, "test_size": 50, "image_size": 32, "epochs": 1}
_DEMO_OPTIONS = ("train_size", "test_size", "image_size", "head_epochs", "epochs")


class _UsageError(Exception):
    """A command-line mistake, reported in one line instead of a usage dump."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        raise _UsageError(f"{message} (see `{self.prog} --help`)")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the `keras-transfer` command line and returns its exit status.

    Subcommands:
        finetune: `--backbone` (zoo name, KerasHub preset, keras.applications
            name or folder) on `--data` (a folder of class sub-folders of
            images, or a CSV with `text` and `label` columns); writes a
            SavedModel, `metrics.json` and `training_curves.png` to `--export`.
        rank: run `--backbones a,b,c` once each over `--data` and rank them
            by a transferability score (`--method logme`); prints the table,
            writes `ranking.json` and the bar chart `ranking.png` to `--output`.
        demo: fine-tune ImageNet EfficientNet-Lite0 on 400 MNIST-5k digits,
            compare with the same network from scratch, print the table and
            write the SavedModel and plot.

    Mistakes in the arguments or settings print one line,
    `keras-transfer: error: ...`, and return a non-zero status.

    Args:
        argv: the arguments, without the program name; defaults to
            `sys.argv[1:]`.

    Example:

    >>> from keras_transfer.cli import main
    >>> main(["demo", "--epochs", "0"])
    2
    >>> main(["finetune", "--backbone", "minilm_l6", "--data", "missing.csv", "--export", "out"])
    1
    """
    try:
        args = _build_parser().parse_args(argv)
        return args.handler(args)
    except _UsageError as error:
        return _fail(error, status=2)
    except (ValueError, TypeError, ImportError, OSError, RuntimeError) as error:
        return _fail(error, status=1)


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=_PROG, description="Transfer learning for Keras 3.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_finetune_command(commands)
    _add_rank_command(commands)
    demo = commands.add_parser(
        "demo",
        help="fine-tune ImageNet EfficientNet-Lite0 on a few MNIST-5k digits, compare with scratch",
        description=(
            "Fine-tunes the zoo's ImageNet EfficientNet-Lite0 on a few MNIST-5k digits "
            "(FeatureCache head, then gradual unfreezing with discriminative rates), trains "
            "the same network from scratch, prints their test accuracies and writes a "
            "SavedModel, metrics.json and training_curves.png. The backend comes from the "
            "KERAS_BACKEND environment variable."
        ),
    )
    demo.add_argument("--train-size", type=_positive_int, help="labelled digits (default 400)")
    demo.add_argument("--test-size", type=_positive_int, help="test digits (default 1000)")
    demo.add_argument("--image-size", type=_positive_int, help="image size in pixels (default 96)")
    demo.add_argument("--head-epochs", type=_positive_int, help="head epochs (default 5)")
    demo.add_argument("--epochs", type=_positive_int, help="unfreezing epochs (default 3)")
    demo.add_argument("--seed", type=_non_negative_int, default=0, help="random seed (default 0)")
    demo.add_argument(
        "--output",
        default=DEFAULT_OUTPUT_DIR,
        help="output folder (default keras_transfer_demo)",
    )
    demo.add_argument(
        "--quick", action="store_true", help="a tiny setting that runs in seconds (for tests)"
    )
    demo.set_defaults(handler=_run_demo)
    return parser


def _add_finetune_command(commands) -> None:
    finetune = commands.add_parser(
        "finetune",
        help="fine-tune a pretrained backbone on a folder of images or a CSV of texts",
        description=(
            "Builds a classifier on --backbone, trains its head on cached features of the "
            "frozen backbone, then unfreezes it from the top with discriminative learning "
            "rates, and writes a SavedModel (raw images or strings in), metrics.json and "
            "training_curves.png to --export."
        ),
    )
    finetune.add_argument("--backbone", required=True, help="zoo name, preset, or folder")
    finetune.add_argument(
        "--data", required=True, help="folder of class sub-folders of images, or CSV (text,label)"
    )
    finetune.add_argument("--export", required=True, help="output folder")
    finetune.add_argument("--head-epochs", type=_positive_int, default=5)
    finetune.add_argument("--epochs", type=_positive_int, default=3, help="unfreezing epochs")
    finetune.add_argument("--batch-size", type=_positive_int, default=32)
    finetune.add_argument(
        "--learning-rate", type=_positive_float, default=1e-4, help="top group's rate"
    )
    finetune.add_argument("--image-size", type=_positive_int, help="default: the preset's, or 224")
    finetune.add_argument("--sequence-length", type=_positive_int, default=128)
    finetune.add_argument("--seed", type=_non_negative_int, default=0)
    finetune.add_argument("--verbose", type=int, choices=(0, 1, 2), default=1)
    finetune.add_argument(
        "--lora-rank",
        type=_positive_int,
        help="train LoRA factors of this rank instead of the backbone (merged before export)",
    )
    finetune.set_defaults(handler=_run_finetune)


def _add_rank_command(commands) -> None:
    rank = commands.add_parser(
        "rank",
        help="rank pretrained backbones for a dataset by a transferability score",
        description=(
            "Runs each --backbones candidate once over --data (frozen, inference only), "
            "scores its features with --method (LogME by default: higher = expected to "
            "transfer better), prints the ranking and writes ranking.json and ranking.png "
            "to --output. --control random also scores each architecture randomly "
            "initialised and warns about negative transfer."
        ),
    )
    rank.add_argument(
        "--data", required=True, help="folder of class sub-folders of images, or CSV (text,label)"
    )
    rank.add_argument(
        "--backbones", required=True, help="comma-separated zoo names, presets or folders"
    )
    rank.add_argument("--method", choices=("logme", "h_score"), default="logme")
    rank.add_argument("--control", choices=("random",), help="score random twins too")
    rank.add_argument("--output", default="keras_transfer_rank", help="output folder")
    rank.add_argument("--image-size", type=_positive_int, help="default: the preset's, or 224")
    rank.add_argument("--sequence-length", type=_positive_int, default=128)
    rank.add_argument("--batch-size", type=_positive_int, default=32)
    rank.add_argument("--verbose", type=int, choices=(0, 1), default=1)
    rank.set_defaults(handler=_run_rank)


def _run_rank(args) -> int:
    import json
    import os

    import numpy as np

    from keras_transfer.backbones import load_preprocessor
    from keras_transfer.finetune import load_labelled_data
    from keras_transfer.transferability import rank_backbones

    names = [name.strip() for name in args.backbones.split(",") if name.strip()]
    if not names:
        raise _UsageError("--backbones needs at least one name (comma-separated)")
    data = load_labelled_data(args.data)
    print(f"{len(data.labels)} {data.kind} examples in {len(data.class_names)} classes")
    preprocessors = {
        name: _rank_preprocessor(load_preprocessor, name, data.kind, args) for name in names
    }
    ranking = rank_backbones(
        {name: name for name in names},
        np.asarray(data.inputs, dtype=object),
        data.labels,
        preprocessors,
        method=args.method,
        control=args.control,
        batch_size=args.batch_size,
        verbose=args.verbose,
    )
    print(ranking)
    os.makedirs(args.output, exist_ok=True)
    with open(os.path.join(args.output, "ranking.json"), "w") as file:
        json.dump({"method": ranking.method, "rows": ranking.to_rows()}, file, indent=2)
    _save_plot(ranking, os.path.join(args.output, "ranking.png"))
    print(f"wrote {args.output}")
    return 0


def _rank_preprocessor(load_preprocessor, name, kind, args):
    """Strings -> the backbone's token inputs, or image paths -> its image input."""
    if kind == "text":
        tokenizer = load_preprocessor(name, sequence_length=args.sequence_length)
        return lambda texts: tokenizer(list(texts))
    from dataclasses import replace

    from keras_transfer.export.serving_inputs import ImageSpec, image_spec_from_converter
    from keras_transfer.finetune.data import read_images

    try:
        converter = getattr(load_preprocessor(name), "image_converter", None)
    except ValueError:
        converter = None
    size = args.image_size or 224
    spec = (
        image_spec_from_converter(converter, size, size, 3)
        if converter
        else ImageSpec(size, size, 3)
    )
    if args.image_size:
        spec = replace(spec, height=args.image_size, width=args.image_size)
    return lambda paths: read_images(list(paths), spec)


def _save_plot(ranking, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    axes = ranking.plot()
    axes.figure.tight_layout()
    axes.figure.savefig(path, dpi=100)
    plt.close(axes.figure)


def _run_finetune(args) -> int:
    from keras_transfer.backbones import load_backbone, load_preprocessor
    from keras_transfer.finetune import finetune, load_labelled_data

    data = load_labelled_data(args.data)
    print(f"{len(data.labels)} {data.kind} examples in {len(data.class_names)} classes")
    backbone = load_backbone(args.backbone)
    result = finetune(
        backbone,
        data,
        _preprocessor_for(load_preprocessor, args, data.kind),
        export_dir=args.export,
        image_size=args.image_size,
        sequence_length=args.sequence_length,
        head_epochs=args.head_epochs,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        seed=args.seed,
        verbose=args.verbose,
        lora_rank=args.lora_rank,
    )
    print(
        f"validation accuracy: {result.head_accuracy:.3f} with the backbone frozen, "
        f"{result.accuracy:.3f} fine-tuned; wrote {args.export}"
    )
    return 0


def _preprocessor_for(load_preprocessor, args, kind):
    """The backbone's preprocessor; image backbones without one get plain resizing."""
    if kind == "text":
        return load_preprocessor(args.backbone, sequence_length=args.sequence_length)
    try:
        return load_preprocessor(args.backbone)
    except ValueError:
        return None


def _run_demo(args) -> int:
    print(f"keras-transfer demo on the {keras.backend.backend()} backend")
    run_demo(seed=args.seed, output_dir=args.output, **_demo_settings(args))
    return 0


def _demo_settings(args) -> dict:
    """`--quick` changes the defaults; explicit options win over both."""
    settings = dict(_QUICK) if args.quick else {}
    for name in _DEMO_OPTIONS:
        if getattr(args, name) is not None:
            settings[name] = getattr(args, name)
    return settings


def _positive_int(text: str) -> int:
    return _bounded_int(text, minimum=1, what="a positive integer")


def _non_negative_int(text: str) -> int:
    return _bounded_int(text, minimum=0, what="an integer >= 0")


def _positive_float(text: str) -> float:
    try:
        return check_number(float(text), "", low=0, low_open=True)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a finite number > 0, got {text!r}") from None


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
