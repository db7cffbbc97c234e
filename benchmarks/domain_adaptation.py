"""Unsupervised domain adaptation: target accuracy of source-only, DANN, confusion and CORAL.

Each method trains the same `kt.DomainAdaptationModel` (same feature
extractor, task head and default domain head, same initial weights for a seed)
on the same `kt.domain_pairs` batches for the same number of steps, with Adam:

- `source_only`: `DomainConfusionLoss("adversarial")` with `adaptation_weight=0`:
  the domain head still trains (so the compute is the same and its accuracy
  shows how separable the domains are), but no gradient reaches the features;
- `dann`: `DomainConfusionLoss("adversarial")`, weight 1, Ganin's ramp;
- `confusion`: `DomainConfusionLoss("confusion")`, weight 1, Ganin's ramp;
- `coral`: `CoralLoss()`, weight 1, Ganin's ramp.

Scored on held-out target examples whose labels are never used in training.
The adaptation weight is 1 for every method (the library default), not tuned
on target labels; `--sensitivity-weights` (default 0.1 and 10) reruns the
three adaptation methods at other weights on `--sensitivity-seeds` (default
seed 0 only) to show how much the choice matters. The seed sets the initial
weights and the shuffling (and, for `moons`, the sampled points).

Tasks:
- `moons`: two moons (`sklearn.datasets.make_moons`, noise 0.1), 300
  labelled source points; target = fresh points rotated by 30 degrees about
  the data's centre (Ganin et al., 2016, section 5.1), 300 unlabelled for
  training and 1,000 for scoring. MLP 2 -> 32 -> 32 (ReLU) -> 2.
- `digits`: MNIST-5k (`kt.datasets.load_mnist_5k`, 4,000 training images)
  brought to 8x8 the way the UCI digits were made (the central 20x20 box
  scaled to a 32x32 bitmap at threshold 0.5, then 4x4 blocks averaged)
  -> scikit-learn digits
  (`kt.datasets.load_digits`, 1,438 unlabelled training images; scored on its
  359 test images). MLP 64 -> 256 -> 128 (ReLU) -> 10.
- `text`: VADER movie snippets -> Amazon review snippets
  (`kt.datasets.load_vader`), 4,000 movie training sentences, the 2,888 Amazon
  training sentences unlabelled, scored on the 722 Amazon test sentences. The
  frozen MiniLM-L6 (`kt.load_backbone("minilm_l6")`, mean-pooled, sequence
  length 64) runs once over all sentences through `kt.FeatureCache.extract`;
  adaptation trains an MLP 384 -> 256 (ReLU) -> 2 on those features.

Usage (KERAS_BACKEND selects the backend; JAX is the quickest here):

    KERAS_BACKEND=jax python benchmarks/domain_adaptation.py --json results/domain_adaptation.json
    KERAS_BACKEND=jax python benchmarks/domain_adaptation.py --tasks moons --seeds 0 1 2
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time

import keras
import numpy as np

import keras_transfer as kt
from keras_transfer.adaptation import (
    CoralLoss,
    DomainAdaptationModel,
    DomainAdaptationSchedule,
    DomainConfusionLoss,
    domain_pairs,
)

METHODS = ("source_only", "dann", "confusion", "coral")
TASKS = ("moons", "digits", "text")
# Per task: hidden widths of the feature extractor, classes, batch size,
# epochs, learning rate.
SETTINGS = {
    "moons": dict(hidden=(32, 32), classes=2, batch_size=32, epochs=100, learning_rate=1e-3),
    "digits": dict(hidden=(256, 128), classes=10, batch_size=64, epochs=30, learning_rate=1e-3),
    "text": dict(hidden=(256,), classes=2, batch_size=64, epochs=20, learning_rate=1e-3),
}
TEXT_SEQUENCE_LENGTH = 64
TEXT_SOURCE_SIZE = 4000


def moons(seed: int):
    from sklearn.datasets import make_moons

    def sample(count, offset):
        x, y = make_moons(count, noise=0.1, random_state=1000 * seed + offset)
        return x.astype("float32"), y.astype("int32")

    angle = math.radians(30)
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], "float32"
    )
    centre = np.array([0.5, 0.25], "float32")

    def rotate(x):
        return (x - centre) @ rotation.T + centre

    x_source, y_source = sample(300, 0)
    x_target, _ = sample(300, 1)
    x_test, y_test = sample(1000, 2)
    return (x_source, y_source), rotate(x_target), (rotate(x_test), y_test)


def digits(seed: int):
    (x_mnist, y_mnist), _ = kt.datasets.load_mnist_5k()
    # The UCI digits count the "on" pixels of 4x4 blocks of 32x32 bitmaps in
    # which each digit fills the box. Make MNIST the same way: its digits sit
    # in the central 20x20 box; scale that to 32x32, threshold, average blocks.
    box = keras.ops.image.resize(x_mnist[:, 4:24, 4:24], (32, 32))
    bitmaps = (keras.ops.convert_to_numpy(box)[..., 0] > 0.5).astype("float32")
    x_mnist = bitmaps.reshape(len(bitmaps), 8, 4, 8, 4).mean(axis=(2, 4)).reshape(-1, 64)
    (x_digits, _), (x_test, y_test) = kt.datasets.load_digits()
    return (
        (x_mnist.astype("float32"), y_mnist),
        x_digits.reshape(len(x_digits), 64),
        (x_test.reshape(len(x_test), 64), y_test),
    )


def text_features(seed: int):
    path = kt.cache_dir("benchmarks") / f"vader_minilm_l6_len{TEXT_SEQUENCE_LENGTH}.npz"
    if not path.exists():
        _extract_text_features(path)
    data = np.load(path)
    return (
        (data["movies_x"], data["movies_y"]),
        data["amazon_x"],
        (data["amazon_test_x"], data["amazon_test_y"]),
    )


def _extract_text_features(path):
    from feature_cache import build_model, text_encoder, tokenize

    (movies_x, movies_y), _ = kt.datasets.load_vader("movies")
    (amazon_x, _), (amazon_test_x, amazon_test_y) = kt.datasets.load_vader("amazon")
    backbone = kt.load_backbone("minilm_l6")
    backbone.trainable = False
    model = build_model(
        text_encoder(backbone, TEXT_SEQUENCE_LENGTH, inference_only=True), TEXT_SEQUENCE_LENGTH
    )
    cache = kt.FeatureCache(model, backbone="encoder", batch_size=64)
    start = time.time()
    arrays = {}
    for name, texts, labels in (
        ("movies", movies_x[:TEXT_SOURCE_SIZE], movies_y[:TEXT_SOURCE_SIZE]),
        ("amazon", amazon_x, np.zeros(len(amazon_x), "int32")),
        ("amazon_test", amazon_test_x, amazon_test_y),
    ):
        features, kept = cache.extract(tokenize(texts, TEXT_SEQUENCE_LENGTH), labels)
        arrays[f"{name}_x"] = np.asarray(features, "float32")
        arrays[f"{name}_y"] = np.asarray(kept, "int32")
    print(f"MiniLM features extracted in {time.time() - start:.0f} s -> {path}")
    np.savez(path, **arrays)


LOADERS = {"moons": moons, "digits": digits, "text": text_features}


def build(task: str, method: str, input_dim: int, seed: int, weight: float):
    settings = SETTINGS[task]
    init = keras.initializers.GlorotUniform
    extractor = keras.Sequential(
        [keras.Input((input_dim,))]
        + [
            keras.layers.Dense(width, activation="relu", kernel_initializer=init(seed + i))
            for i, width in enumerate(settings["hidden"])
        ],
        name="features",
    )
    task_head = keras.layers.Dense(settings["classes"], kernel_initializer=init(seed + 10))
    loss = {
        "source_only": DomainConfusionLoss("adversarial"),
        "dann": DomainConfusionLoss("adversarial"),
        "confusion": DomainConfusionLoss("confusion"),
        "coral": CoralLoss(),
    }[method]
    weight = 0.0 if method == "source_only" else weight
    model = DomainAdaptationModel(
        extractor, task_head, adaptation_loss=loss, adaptation_weight=weight
    )
    model.compile(
        optimizer=keras.optimizers.Adam(settings["learning_rate"]),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def run(task: str, method: str, seed: int, data, weight: float = 1.0) -> dict:
    (x_source, y_source), x_target, (x_test, y_test) = data
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    model = build(task, method, x_source.shape[1], seed, weight)
    settings = SETTINGS[task]
    pairs = domain_pairs(
        (x_source, y_source), x_target, batch_size=settings["batch_size"], seed=seed
    )
    start = time.time()
    history = model.fit(
        pairs, epochs=settings["epochs"], verbose=0, callbacks=[DomainAdaptationSchedule()]
    )
    seconds = time.time() - start
    target = model.evaluate(x_test, y_test, verbose=0, return_dict=True)["accuracy"]
    logs = {key: values[-1] for key, values in history.history.items()}
    return {
        "task": task,
        "method": method,
        "weight": 0.0 if method == "source_only" else weight,
        "seed": seed,
        "target_accuracy": float(target),
        "source_train_accuracy": float(logs["accuracy"]),
        "domain_accuracy": float(logs.get("domain_accuracy", float("nan"))),
        "steps": int(settings["epochs"] * len(pairs)),
        "seconds": round(seconds, 1),
    }


def summarize(results: list[dict]) -> str:
    lines = [
        "| task | method | weight | target accuracy % (mean ± std) | gain vs source-only "
        "(paired by seed) | per seed | domain accuracy |",
        "|---|---|---|---|---|---|---|",
    ]
    settings = sorted({(r["method"], r["weight"]) for r in results}, key=_setting_order)
    for task in TASKS:
        baseline = {
            r["seed"]: 100 * r["target_accuracy"]
            for r in results
            if r["task"] == task and r["method"] == "source_only"
        }
        for method, weight in settings:
            runs = [
                r
                for r in results
                if r["task"] == task and r["method"] == method and r["weight"] == weight
            ]
            if not runs:
                continue
            accuracies = [100 * r["target_accuracy"] for r in runs]
            gains = [
                a - baseline[r["seed"]] for a, r in zip(accuracies, runs) if r["seed"] in baseline
            ]
            domain = [r["domain_accuracy"] for r in runs if not math.isnan(r["domain_accuracy"])]
            gain = "-" if method == "source_only" or not gains else _mean_std(gains, signed=True)
            lines.append(
                f"| {task} | {method} | {weight:g} | {_mean_std(accuracies)} | {gain} | "
                + ", ".join(f"{a:.1f}" for a in accuracies)
                + " | "
                + (f"{statistics.mean(domain):.2f}" if domain else "-")
                + " |"
            )
    return "\n".join(lines)


def _mean_std(values, signed=False) -> str:
    mean = f"{statistics.mean(values):+.1f}" if signed else f"{statistics.mean(values):.1f}"
    if len(values) < 2:
        return f"{mean} (1 seed)"
    return f"{mean} ± {statistics.stdev(values):.1f}"


def _setting_order(setting):
    method, weight = setting
    return METHODS.index(method), weight


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", choices=TASKS, default=list(TASKS))
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--weight", type=float, default=1.0, help="adaptation weight")
    parser.add_argument(
        "--sensitivity-weights",
        nargs="*",
        type=float,
        default=[0.1, 10.0],
        help="other adaptation weights, run on --sensitivity-seeds only",
    )
    parser.add_argument("--sensitivity-seeds", nargs="*", type=int, default=[0])
    parser.add_argument("--json", help="write every run's numbers there")
    args = parser.parse_args(argv)
    results = []
    start = time.time()
    for task in args.tasks:
        for seed in sorted(set(args.seeds) | set(args.sensitivity_seeds)):
            data = LOADERS[task](seed)
            for method in args.methods:
                weights = [args.weight] if seed in args.seeds else []
                if method != "source_only" and seed in args.sensitivity_seeds:
                    weights += args.sensitivity_weights
                for weight in weights:
                    result = run(task, method, seed, data, weight)
                    results.append(result)
                    print(json.dumps(result), flush=True)
    print(summarize(results))
    print(
        f"total {time.time() - start:.0f} s, keras {keras.__version__}, "
        f"backend {keras.backend.backend()}, {platform.processor() or platform.machine()}"
    )
    if args.json:
        with open(args.json, "w") as file:
            json.dump({"args": vars(args), "results": results}, file, indent=1)


if __name__ == "__main__":
    main()
