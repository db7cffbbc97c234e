"""Wall time of training a head on a frozen MiniLM: `kt.FeatureCache` against the Keras guide.

The Keras transfer-learning guide freezes the backbone (`trainable = False`,
called with `training=False`) and fits backbone + head, so every epoch runs the
frozen backbone forward again over the same inputs. `kt.FeatureCache` runs it
once and trains the head on the cached features. This script times both on the
same data, in the same process, for `--epochs` head epochs:

- backbone: the real MiniLM-L6 (`kt.load_backbone("minilm_l6")`), its
  `sequence_output` mean-pooled over the padding mask;
- data: the first `--num-samples` training sentences of
  `kt.datasets.load_vader("movies")`, tokenised by
  `kt.load_preprocessor("minilm_l6", sequence_length=--seq-len)`;
- head: `Dense(2)`, Adam 1e-3, batch `--batch-size`, the same initial weights
  and the same shuffling on both sides.

A third side, `handmade`, is the cache a user writes by hand: `predict` the
features once, then `fit` a head-only model on the arrays. `--sides` picks
which of the three run.

The FeatureCache and handmade times include the one-time feature pass, and every
side includes its own tracing. Rounds rotate which side runs first. Wall and
process CPU time are recorded (CPU time is steadier on a shared machine). At the
end every head is evaluated on the VADER movie test split (the backbone is frozen
and deterministic, so all are evaluated on the same features).

The model is `Sequential([Input(token_ids), encoder, Dense(2)])`, where the
encoder is a nested model that builds the BERT inputs from the token ids (pad
id 0) and pools. A Functional outer model around a KerasHub backbone is not
used because `FeatureCache` cannot cut it (see the README section).

Usage (KERAS_BACKEND selects the backend):

    KERAS_BACKEND=tensorflow python benchmarks/feature_cache.py --rounds 2
    KERAS_BACKEND=jax python benchmarks/feature_cache.py --rounds 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np

import keras_transfer as kt

SEED = 0
LEARNING_RATE = 1e-3


class BertInputs(keras.layers.Layer):
    """Token ids -> the dict of inputs a KerasHub BERT backbone takes (pad id 0)."""

    def call(self, token_ids):
        return {
            "token_ids": token_ids,
            "segment_ids": keras.ops.zeros_like(token_ids),
            "padding_mask": keras.ops.not_equal(token_ids, 0),
        }


class MaskedMeanPooling(keras.layers.Layer):
    """Mean of the token vectors over the non-padding positions (sentence-transformers' pooling)."""

    def call(self, sequence, padding_mask):
        mask = keras.ops.expand_dims(keras.ops.cast(padding_mask, sequence.dtype), -1)
        total = keras.ops.sum(sequence * mask, axis=1)
        return total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1.0)


def text_encoder(backbone, sequence_length: int, inference_only: bool) -> keras.Model:
    """Nested model: token ids -> mean-pooled MiniLM sentence vector.

    `inference_only` calls the backbone with `training=False` (the Keras
    guide's frozen-backbone recipe); otherwise dropout follows `fit`.
    """
    token_ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    inputs = BertInputs(name="bert_inputs")(token_ids)
    outputs = backbone(inputs, training=False) if inference_only else backbone(inputs)
    pooled = MaskedMeanPooling(name="mean_pool")(outputs["sequence_output"], inputs["padding_mask"])
    return keras.Model(token_ids, pooled, name="encoder")


def tokenize(texts, sequence_length: int) -> np.ndarray:
    preprocessor = kt.load_preprocessor("minilm_l6", sequence_length=sequence_length)
    token_ids = []
    for start in range(0, len(texts), 512):
        batch = preprocessor(list(texts[start : start + 512]))
        token_ids.append(keras.ops.convert_to_numpy(batch["token_ids"]))
    return np.concatenate(token_ids).astype("int32")


def build_model(encoder, sequence_length: int, num_classes: int = 2) -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((sequence_length,), dtype="int32"),
            encoder,
            keras.layers.Dense(
                num_classes,
                kernel_initializer=keras.initializers.GlorotUniform(seed=SEED),
                name="head",
            ),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def run_guide(encoder, x, y, args):
    model = build_model(encoder, args.seq_len)
    keras.utils.set_random_seed(SEED)
    model.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    return model


def run_cache(encoder, x, y, args):
    model = build_model(encoder, args.seq_len)
    keras.utils.set_random_seed(SEED)
    kt.FeatureCache(model, batch_size=args.batch_size).fit(
        x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0
    )
    return model


def run_handmade(encoder, x, y, args):
    """The cache a user would write by hand: `predict` once, `fit` the head on the arrays."""
    model = build_model(encoder, args.seq_len)
    keras.utils.set_random_seed(SEED)
    features = encoder.predict(x, batch_size=args.batch_size, verbose=0)
    head = keras.Sequential([keras.Input(features.shape[1:]), model.get_layer("head")])
    head.compile(
        optimizer=keras.optimizers.Adam(LEARNING_RATE),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    head.fit(features, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0)
    return model


RUNS = {"guide": run_guide, "cache": run_cache, "handmade": run_handmade}


def ratios(times, numerator: str, denominator: str, clock: str) -> list[float]:
    return [a[clock] / b[clock] for a, b in zip(times[numerator], times[denominator])]


def head_accuracy(model, features, labels) -> float:
    logits = model.get_layer("head")(features)
    predictions = np.argmax(keras.ops.convert_to_numpy(logits), axis=-1)
    return float(np.mean(predictions == labels))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-samples", type=int, default=2048)
    parser.add_argument("--num-test", type=int, default=None, help="test sentences (default all)")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--sides",
        default="guide,cache,handmade",
        help="comma-separated runs: guide, cache (kt.FeatureCache), handmade (predict once, fit)",
    )
    parser.add_argument("--json", help="write the raw timings here")
    args = parser.parse_args(argv)

    (x_train, y_train), (x_test, y_test) = kt.datasets.load_vader("movies")
    x_train, y_train = x_train[: args.num_samples], y_train[: args.num_samples]
    x_test, y_test = x_test[: args.num_test], y_test[: args.num_test]
    x = tokenize(x_train, args.seq_len)
    x_test_ids = tokenize(x_test, args.seq_len)
    backbone = kt.load_backbone("minilm_l6")
    backbone.trainable = False
    encoder = text_encoder(backbone, args.seq_len, inference_only=True)

    sides = [side.strip() for side in args.sides.split(",")]
    unknown = sorted(set(sides) - set(RUNS))
    if unknown:
        parser.error(f"unknown --sides {unknown}; choose from {sorted(RUNS)}")
    times = {side: [] for side in sides}
    models = {}
    for round_index in range(args.rounds):
        # Rotate the order so that no side always runs first (tracing, caches, load).
        shift = round_index % len(sides)
        for side in sides[shift:] + sides[:shift]:
            run = RUNS[side]
            models[side], wall, cpu = timed(lambda run=run: run(encoder, x, y_train, args))
            times[side].append({"wall_s": wall, "cpu_s": cpu})
            print(f"round {round_index} {side}: wall {wall:.1f} s, cpu {cpu:.1f} s", flush=True)

    test_features = encoder.predict(x_test_ids, batch_size=args.batch_size, verbose=0)
    accuracy = {side: head_accuracy(model, test_features, y_test) for side, model in models.items()}
    result = {
        "backend": keras.backend.backend(),
        "settings": vars(args),
        "times": times,
        "test_accuracy": accuracy,
        "num_test": len(y_test),
    }
    comparisons = [("guide", "cache", "target >= 5"), ("cache", "handmade", "target <= 1.05")]
    for numerator, denominator, _ in comparisons:
        if numerator in times and denominator in times:
            key = f"{numerator}_over_{denominator}"
            result[key] = {
                clock: ratios(times, numerator, denominator, clock) for clock in ("wall_s", "cpu_s")
            }
    print(json.dumps(result, indent=1))
    for numerator, denominator, target in comparisons:
        key = f"{numerator}_over_{denominator}"
        if key in result:
            wall = statistics.median(result[key]["wall_s"])
            cpu = statistics.median(result[key]["cpu_s"])
            print(
                f"median ratio {numerator} / {denominator}: "
                f"wall {wall:.3f}, cpu {cpu:.3f} ({target})"
            )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
