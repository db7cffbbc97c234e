"""`run_demo`: transfer a small CNN from MNIST-5k to 8x8 handwritten digits."""

from __future__ import annotations

import dataclasses
import numbers
import time

import keras
import numpy as np

from keras_transfer.datasets import load_digits, load_mnist_5k
from keras_transfer.freezing import FreezeSchedule
from keras_transfer.groups import describe_groups
from keras_transfer.optimizers import DiscriminativeLR

DEFAULT_EPOCHS = 10
DEFAULT_TRAIN_SIZE = 100
DEFAULT_PRETRAIN_EPOCHS = 6

_NUM_CLASSES = 10
_IMAGE_SIZE = 28
# MNIST centres each digit in a 20x20 box inside its 28x28 frame; the 8x8
# digits are upsampled into the same box so both domains share a framing.
_DIGIT_BOX = 20
_DROPOUT = 0.3
_BATCH_SIZE = 16
_PRETRAIN_BATCH_SIZE = 64
_LEARNING_RATE = 3e-3
_PRETRAIN_LEARNING_RATE = 1e-3
_UNFREEZE_EVERY_EPOCHS = 2


@dataclasses.dataclass(frozen=True)
class DemoResult:
    """One row of the demo's table.

    Args:
        method: what was trained, in words.
        accuracy: accuracy on the digits test split.
        seconds: wall-clock seconds of its training (for the pretrained
            model: of the pretraining).
    """

    method: str
    accuracy: float
    seconds: float


def run_demo(
    epochs: int = DEFAULT_EPOCHS,
    train_size: int = DEFAULT_TRAIN_SIZE,
    seed: int = 0,
    pretrain_epochs: int = DEFAULT_PRETRAIN_EPOCHS,
    pretrain_size: int | None = None,
    verbose: int = 2,
    print_fn=print,
) -> list[DemoResult]:
    """Pretrains on MNIST-5k, fine-tunes on few 8x8 digits, compares with scratch.

    The transfer-learning job in a minute or two on a CPU, on any backend. A
    small CNN learns MNIST-5k (the source domain), then is fine-tuned on
    `train_size` labelled images of scikit-learn's 8x8 digits (the target
    domain: other writers, other preprocessing; upsampled to 28x28) with
    `FreezeSchedule.gradual` (the head first, one more layer group every two
    epochs) and `DiscriminativeLR` (each lower group at the rate of the group
    above / 2.6). The same architecture trained from scratch on the same
    images for the same epochs is the baseline. Both are scored on the digits
    test split (359 images). The digit classes are the same in both domains,
    so the pretrained head is kept; a new label set would need a new head.

    Args:
        epochs: epochs of training on the digits, for both methods.
            Defaults to 10.
        train_size: labelled digits to train on, balanced over the 10
            classes (at least 10, at most 1,438). Defaults to 100.
        seed: seed of the labelled subset and of the weight initialisation.
            Defaults to 0.
        pretrain_epochs: epochs of pretraining on MNIST-5k. Defaults to 6.
        pretrain_size: MNIST-5k training images to pretrain on; `None`
            (default) uses all 4,000.
        verbose: 2 (default) prints the layer groups and one line per epoch;
            0 prints only the results table.
        print_fn: where the demo's own text goes; `None` prints nothing.

    Returns:
        A list of `DemoResult`: the MNIST-5k model used as it is (no digits
        seen; its seconds are the pretraining's), the model trained from
        scratch, and the fine-tuned model (its seconds exclude pretraining).

    Example:

    >>> from keras_transfer.demo import run_demo
    >>> results = run_demo(epochs=1, train_size=10, pretrain_epochs=1,
    ...                    pretrain_size=200, verbose=0, print_fn=None)
    >>> [result.method for result in results]  # doctest: +NORMALIZE_WHITESPACE
    ['pretrained on MNIST-5k only (no digits)', 'from scratch on 10 digits',
     'fine-tuned: gradual unfreezing + discriminative LR']
    """
    _check_count("epochs", epochs, minimum=1)
    _check_count("seed", seed, minimum=0)
    _check_count("pretrain_epochs", pretrain_epochs, minimum=1)
    say = print_fn if (print_fn is not None and verbose) else _silent
    digits_train, digits_test = _digits_task(train_size, seed)
    source, source_result = _pretrain(
        pretrain_epochs, pretrain_size, seed, digits_test, verbose, say
    )
    scratch = _train_from_scratch(epochs, seed, digits_train, digits_test, verbose, say)
    fine_tuned = _fine_tune(source, epochs, seed, digits_train, digits_test, verbose, say)
    results = [source_result, scratch, fine_tuned]
    say(f"\nAccuracy on the {len(digits_test[1])} test digits:")
    if print_fn is not None:
        print_fn(_format_table(results))
    return results


def _format_table(results: list[DemoResult]) -> str:
    """The results as a plain-text table.

    >>> print(_format_table([DemoResult("from scratch", 0.85, 3.0)]))
    method        digits test accuracy  seconds
    ------------  --------------------  -------
    from scratch  0.850                 3.0
    """
    rows = [("method", "digits test accuracy", "seconds")]
    rows += [(r.method, f"{r.accuracy:.3f}", f"{r.seconds:.1f}") for r in results]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(line.rstrip() for line in lines)


def _build_cnn(name: str) -> keras.Model:
    """A small CNN with 4 layer groups: conv1, conv2, features, head."""
    inputs = keras.Input((_IMAGE_SIZE, _IMAGE_SIZE, 1))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Conv2D(32, 3, activation="relu", name="conv2")(x)
    x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(_DROPOUT)(x)
    x = keras.layers.Dense(64, activation="relu", name="features")(x)
    x = keras.layers.Dropout(_DROPOUT)(x)
    outputs = keras.layers.Dense(_NUM_CLASSES, activation="softmax", name="head")(x)
    return keras.Model(inputs, outputs, name=name)


def _pretrain(epochs, size, seed, digits_test, verbose, say):
    (x_train, y_train), (x_test, y_test) = load_mnist_5k()
    if size is not None:
        _check_count("pretrain_size", size, minimum=_NUM_CLASSES, maximum=len(x_train))
        x_train, y_train = x_train[:size], y_train[:size]
    say(f"\n[1/3] Pretraining on MNIST-5k (source): {len(x_train)} images, {epochs} epochs")
    keras.utils.set_random_seed(seed)
    model = _build_cnn("mnist_source")
    _compile(model, keras.optimizers.Adam(_PRETRAIN_LEARNING_RATE))
    start = time.perf_counter()
    model.fit(x_train, y_train, epochs=epochs, batch_size=_PRETRAIN_BATCH_SIZE, verbose=verbose)
    seconds = time.perf_counter() - start
    say(f"MNIST-5k test accuracy: {_accuracy(model, (x_test, y_test)):.3f}")
    accuracy = _accuracy(model, digits_test)
    return model, DemoResult("pretrained on MNIST-5k only (no digits)", accuracy, seconds)


def _train_from_scratch(epochs, seed, train, test, verbose, say):
    say(f"\n[2/3] From scratch on {len(train[0])} digits: {epochs} epochs, Adam")
    keras.utils.set_random_seed(seed)
    model = _build_cnn("scratch")
    _compile(model, keras.optimizers.Adam(_LEARNING_RATE))
    method = f"from scratch on {len(train[0])} digits"
    return _fit_and_score(model, method, epochs, train, test, [], verbose)


def _fine_tune(source, epochs, seed, train, test, verbose, say):
    say(
        f"\n[3/3] Fine-tuning the MNIST-5k model on {len(train[0])} digits: {epochs} epochs, "
        "FreezeSchedule.gradual + DiscriminativeLR(Adam)"
    )
    keras.utils.set_random_seed(seed)
    model = _build_cnn("fine_tuned")
    model.set_weights(source.get_weights())
    say("Layer groups (input to output):")
    say(describe_groups(model, print_fn=None))
    _compile(model, DiscriminativeLR(keras.optimizers.Adam(_LEARNING_RATE), model))
    schedule = FreezeSchedule.gradual(
        model, every_epochs=_UNFREEZE_EVERY_EPOCHS, verbose=int(verbose > 0)
    )
    method = "fine-tuned: gradual unfreezing + discriminative LR"
    return _fit_and_score(model, method, epochs, train, test, [schedule], verbose)


def _fit_and_score(model, method, epochs, train, test, callbacks, verbose):
    start = time.perf_counter()
    model.fit(*train, epochs=epochs, batch_size=_BATCH_SIZE, callbacks=callbacks, verbose=verbose)
    accuracy = _accuracy(model, test)
    return DemoResult(method, accuracy, time.perf_counter() - start)


def _digits_task(train_size, seed):
    (x_train, y_train), (x_test, y_test) = load_digits()
    _check_count("train_size", train_size, minimum=_NUM_CLASSES, maximum=len(x_train))
    chosen = _balanced_subset(y_train, train_size, seed)
    return (_to_mnist_frame(x_train[chosen]), y_train[chosen]), (_to_mnist_frame(x_test), y_test)


def _balanced_subset(labels, size, seed):
    """Indices of `size` examples taken round-robin over the classes."""
    order = np.random.default_rng(seed).permutation(len(labels))
    rank = np.zeros(len(order), dtype="int64")
    counts: dict = {}
    for position, label in enumerate(labels[order]):
        rank[position] = counts.get(label, 0)
        counts[label] = rank[position] + 1
    return order[np.argsort(rank, kind="stable")[:size]]


def _to_mnist_frame(images):
    resized = keras.ops.image.resize(images, (_DIGIT_BOX, _DIGIT_BOX), interpolation="bilinear")
    margin = (_IMAGE_SIZE - _DIGIT_BOX) // 2
    padding = ((0, 0), (margin, margin), (margin, margin), (0, 0))
    return np.pad(keras.ops.convert_to_numpy(resized), padding)


def _compile(model, optimizer):
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])


def _accuracy(model, data) -> float:
    return float(model.evaluate(*data, verbose=0, return_dict=True)["accuracy"])


def _check_count(name, value, minimum, maximum=None):
    is_integer = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not is_integer or value < minimum or (maximum is not None and value > maximum):
        bounds = f">= {minimum}" if maximum is None else f"between {minimum} and {maximum}"
        raise ValueError(f"`{name}` must be an integer {bounds}, got {value!r}.")


def _silent(*args, **kwargs):
    pass
