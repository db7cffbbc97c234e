"""`run_demo`: ImageNet EfficientNet-Lite0 fine-tuned on a few MNIST-5k digits, vs scratch."""

from __future__ import annotations

import dataclasses
import os
import time

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer.backbones import load_backbone, load_preprocessor
from keras_transfer.datasets import load_mnist_5k
from keras_transfer.features.pipeline import numpy_batches, predict_padded
from keras_transfer.finetune import LabelledData, finetune
from keras_transfer.finetune.classifier import image_classifier
from keras_transfer.finetune.data import split_validation
from keras_transfer.nesting import nested_layers

DEFAULT_TRAIN_SIZE = 400
DEFAULT_TEST_SIZE = 1000
DEFAULT_IMAGE_SIZE = 96
DEFAULT_HEAD_EPOCHS = 5
DEFAULT_EPOCHS = 3
DEFAULT_OUTPUT_DIR = "keras_transfer_demo"
BACKBONE = "efficientnet_lite0_imagenet"

_NUM_CLASSES = 10
_VALIDATION_FRACTION = 0.2
_SCRATCH_LEARNING_RATE = 1e-3
# A randomly initialised network sees only a few dozen steps here; Keras'
# default BatchNormalization momentum (0.99) would leave its moving statistics
# near their initial values, and inference-mode accuracy near chance.
_SCRATCH_BN_MOMENTUM = 0.9
_PREDICT_BATCH = 64


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """One row of the demo's table.

    Args:
        method: what was trained, in words.
        accuracy: accuracy on the MNIST-5k test images.
        seconds: wall-clock seconds of its training.
    """

    method: str
    accuracy: float
    seconds: float


def run_demo(
    train_size: int = DEFAULT_TRAIN_SIZE,
    test_size: int = DEFAULT_TEST_SIZE,
    image_size: int = DEFAULT_IMAGE_SIZE,
    head_epochs: int = DEFAULT_HEAD_EPOCHS,
    epochs: int = DEFAULT_EPOCHS,
    seed: int = 0,
    output_dir: str | None = DEFAULT_OUTPUT_DIR,
    verbose: int = 2,
    print_fn=print,
) -> list[DemoResult]:
    """Fine-tunes ImageNet EfficientNet-Lite0 on a few digits and compares with scratch.

    The README's main job, offline, in a few minutes on a CPU: real
    pretrained weights (`kt.zoo`'s EfficientNet-Lite0, ImageNet) and real
    data (MNIST-5k). `kt.finetune` trains a head on the frozen backbone's
    cached features, then unfreezes it from the top with discriminative
    learning rates, and writes a SavedModel (raw uint8 images in, class
    probabilities and digit names out), `metrics.json` and
    `training_curves.png` into `output_dir`. The same architecture from
    random initialisation, trained on the same images for the same number of
    epochs, is the baseline. Both are scored on `test_size` MNIST-5k test
    images.

    Args:
        train_size: labelled digits, balanced over the classes (20 % of them
            are held out for validation). Defaults to 400.
        test_size: test images (at most 1,000). Defaults to 1000.
        image_size: images are resized to this size. Defaults to 96.
        head_epochs: epochs of the head on the frozen backbone. Defaults to 5.
        epochs: unfreezing epochs. Defaults to 3.
        seed: seed of the subset, initialisation and shuffling. Defaults to 0.
        output_dir: where the SavedModel, metrics and plot go; `None` writes
            nothing. Defaults to `"keras_transfer_demo"`.
        verbose: 2 (default) prints one line an epoch, 0 only the table.
        print_fn: where the demo's own text goes; `None` prints nothing.

    Returns:
        A list of `DemoResult`: the model from scratch, then the fine-tuned one.

    Example:

    >>> from keras_transfer.demo import run_demo
    >>> results = run_demo(train_size=20, test_size=20, image_size=32, head_epochs=1,
    ...                    epochs=1, output_dir=None, verbose=0, print_fn=None)  # doctest: +SKIP
    >>> [result.method for result in results]  # doctest: +SKIP
    ['EfficientNet-Lite0 from scratch', 'EfficientNet-Lite0 ImageNet, fine-tuned']
    """
    for name, value, minimum in (
        ("head_epochs", head_epochs, 1),
        ("epochs", epochs, 1),
        ("image_size", image_size, 32),
        ("seed", seed, 0),
    ):
        _check_count(name, value, minimum)
    say = print_fn if (print_fn is not None and verbose) else _silent
    train, test = _digits(train_size, test_size, seed)
    say(f"[1/2] {BACKBONE} -> {len(train.labels)} MNIST-5k digits at {image_size} px")
    backbone = load_backbone(BACKBONE)
    tuned = finetune(
        backbone,
        train,
        load_preprocessor(BACKBONE),
        export_dir=output_dir,
        image_size=image_size,
        head_epochs=head_epochs,
        epochs=epochs,
        seed=seed,
        verbose=verbose,
    )
    test_inputs = tuned.prepare(test[0])
    say(f"\n[2/2] The same architecture from random initialisation, {head_epochs + epochs} epochs")
    scratch_result = _train_from_scratch(
        backbone, train, tuned.prepare, (test_inputs, test[1]), head_epochs + epochs, seed, verbose
    )
    results = [
        scratch_result,
        DemoResult(
            "EfficientNet-Lite0 ImageNet, fine-tuned",
            _accuracy(tuned.model, test_inputs, test[1]),
            tuned.seconds,
        ),
    ]
    say(f"\nValidation accuracy with the backbone frozen (head only): {tuned.head_accuracy:.3f}")
    say(f"Accuracy on {len(test[1])} MNIST-5k test images:")
    if print_fn is not None:
        print_fn(_format_table(results))
    if output_dir is not None:
        written = os.path.join(output_dir, "saved_model")
        say(f"\nWrote {written}, metrics.json and training_curves.png")
    return results


def _digits(train_size, test_size, seed):
    (x_train, y_train), (x_test, y_test) = load_mnist_5k()
    _check_count("train_size", train_size, minimum=2 * _NUM_CLASSES, maximum=len(x_train))
    _check_count("test_size", test_size, minimum=1, maximum=len(x_test))
    chosen = _balanced_subset(y_train, train_size, seed)
    train = LabelledData(
        _to_uint8(x_train[chosen]), y_train[chosen], [str(d) for d in range(10)], "image"
    )
    return train, (_to_uint8(x_test[:test_size]), y_test[:test_size])


def _to_uint8(images):
    return np.round(images * 255).astype("uint8")


def _train_from_scratch(backbone, train, prepare, test, epochs, seed, verbose):
    test_inputs, test_labels = test
    keras.utils.set_random_seed(seed)
    random_backbone = type(backbone).from_config(backbone.get_config())
    for layer in nested_layers(random_backbone):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = _SCRATCH_BN_MOMENTUM
    model = image_classifier(random_backbone, test_inputs.shape[1:], _NUM_CLASSES, seed=seed)
    model.compile(
        optimizer=keras.optimizers.Adam(_SCRATCH_LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train_indices, _ = split_validation(train.labels, _VALIDATION_FRACTION, seed)
    x = prepare(train.inputs[train_indices])
    start = time.perf_counter()
    model.fit(x, train.labels[train_indices], epochs=epochs, batch_size=32, verbose=verbose)
    seconds = time.perf_counter() - start
    return DemoResult(
        "EfficientNet-Lite0 from scratch", _accuracy(model, test_inputs, test_labels), seconds
    )


def _format_table(results: list[DemoResult]) -> str:
    """The results as a plain-text table.

    >>> print(_format_table([DemoResult("from scratch", 0.85, 3.0)]))
    method        test accuracy  seconds
    ------------  -------------  -------
    from scratch  0.850          3.0
    """
    rows = [("method", "test accuracy", "seconds")]
    rows += [(r.method, f"{r.accuracy:.3f}", f"{r.seconds:.1f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _balanced_subset(labels, size, seed):
    """Indices of `size` examples taken round-robin over the classes."""
    order = np.random.default_rng(seed).permutation(len(labels))
    rank = np.zeros(len(order), dtype="int64")
    counts: dict = {}
    for position, label in enumerate(labels[order]):
        rank[position] = counts.get(label, 0)
        counts[label] = rank[position] + 1
    return order[np.argsort(rank, kind="stable")[:size]]


def _accuracy(model, inputs, labels) -> float:
    # Every batch at one size, the last one padded: `model.predict` would
    # trace its predict step again for a shorter last batch.
    logits = np.concatenate(
        [
            predict_padded(model, batch, _PREDICT_BATCH)
            for batch, _ in numpy_batches(inputs, None, _PREDICT_BATCH)
        ]
    )
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def _check_count(name, value, minimum, maximum=None):
    if maximum is None:
        check_integer(value, name, low=minimum)
        return
    check_integer(value, name)
    if not minimum <= value <= maximum:
        raise ValueError(
            f"`{name}` must be an integer between {minimum} and {maximum}, got {value!r}."
        )


def _silent(*args, **kwargs):
    pass
