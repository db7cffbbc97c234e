"""Gradual unfreezing with the frozen prefix cached in every stage, against plain Keras.

While the bottom layer groups are frozen, plain Keras still runs them forward
at every step of every epoch. `kt.FreezeSchedule(..., cache_frozen=True)` runs
them once per stage and trains the top on their cached outputs. Two parts, each
in one process on one backend (`KERAS_BACKEND`), so that the ratios compare runs
on the same machine under the same load:

`--part stage`: one stage, "top 2 groups trainable" (`transformer_layer_5` and
    the head) on MiniLM-L6, against a full fine-tuning epoch:
    - `full`: every layer trainable, `model.fit`;
    - `frozen`: plain Keras with the bottom groups frozen by hand
      (`kt.freeze(plan, 2)`, then `model.fit`): the prefix runs every step;
    - `cached`: `kt.FreezeSchedule(plan, {0: 2}, cache_frozen=True).fit`.
    The steady epoch is the mean of epochs 2 to `--epochs` (epoch 1 traces);
    the cached side's one-time prefix pass is reported apart. Rounds rotate
    the order of the sides. Target: cached / full <= 0.35 (frozen / full is
    about 0.5).

`--part recipe`: `benchmarks/transfer_accuracy.py`'s text recipe: a head
    trained on the frozen encoder, then `{0: 2, 1: 5, 2: "all"}` with
    `kt.DiscriminativeLR` (AdamW, warm-up + cosine), the same initial weights
    and seed on every side:
    - `plain`: the Keras guide's way: head epochs on the frozen encoder by
      `model.fit`, then the schedule as a callback of `model.fit`;
    - `uncached`: the head through `kt.FeatureCache`, then the schedule as a
      callback (what `transfer_accuracy.py` ran);
    - `cached`: the head through `kt.FeatureCache`, then
      `FreezeSchedule(cache_frozen=True).fit`.
    Reports each stage's time (prefix passes apart), the totals and the test
    accuracy on the VADER movie test split. `--save-weights` keeps the cached
    side's fine-tuned model (the fine-tuned teacher of `distillation.py`).

Data: the first `--num-samples` training sentences of
`kt.datasets.load_vader("movies")` (stage: 512, recipe: all 8,455 unless
given), tokenised to `--seq-len` MiniLM ids.

Usage:

    KERAS_BACKEND=tensorflow python benchmarks/progressive_cache.py --part stage
    KERAS_BACKEND=jax python benchmarks/progressive_cache.py --part stage --json stage_jax.json
    KERAS_BACKEND=tensorflow python benchmarks/progressive_cache.py --part recipe --num-samples 2048
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import keras
import numpy as np
from feature_cache import text_encoder, tokenize
from transfer_accuracy import (
    HEAD_LR,
    WEIGHT_DECAY,
    classifier,
    compile_model,
    groups_that_train,
    warmup_cosine,
)

import keras_transfer as kt
from keras_transfer.groups.layer_variables import count_params

STAGE_LR = 1e-5
RECIPE_SCHEDULE = {0: 2, 1: 5, 2: "all"}


class EpochClock(keras.callbacks.Callback):
    """Each epoch's wall and process-CPU seconds, and those since the previous
    epoch ended (or training began): a cached stage's prefix pass falls in
    that gap. With a `FreezeSchedule`, also each epoch's trainable groups."""

    def __init__(self, schedule=None):
        super().__init__()
        self.schedule = schedule
        self.epochs: list[dict] = []

    def on_train_begin(self, logs=None):
        self._last = _now()

    def on_epoch_begin(self, epoch, logs=None):
        self._gap = _since(self._last)
        self._start = _now()

    def on_epoch_end(self, epoch, logs=None):
        entry = {"epoch": epoch, "before_epoch": self._gap, "epoch_time": _since(self._start)}
        if self.schedule is not None:
            entry["trainable_groups"] = self.schedule.stage_for(epoch)
        self.epochs.append(entry)
        self._last = _now()


def _now():
    return time.perf_counter(), time.process_time()


def _since(start) -> dict:
    wall, cpu = start
    return {"wall_s": time.perf_counter() - wall, "cpu_s": time.process_time() - cpu}


def _total(parts) -> dict:
    return {clock: sum(part[clock] for part in parts) for clock in ("wall_s", "cpu_s")}


def load_text(args):
    (x_train, y_train), (x_test, y_test) = kt.datasets.load_vader("movies")
    x_train, y_train = x_train[: args.num_samples], y_train[: args.num_samples]
    x_test, y_test = x_test[: args.num_test], y_test[: args.num_test]
    return (tokenize(x_train, args.seq_len), y_train), (tokenize(x_test, args.seq_len), y_test)


def text_model(backbone, args):
    keras.utils.set_random_seed(args.seed)
    encoder = text_encoder(backbone, args.seq_len, inference_only=False)
    return classifier(encoder, (args.seq_len,), "int32", 2)


# --- part "stage" --------------------------------------------------------------


def run_stage_side(side, model, plan, initial_weights, x, y, args) -> dict:
    model.set_weights(initial_weights)
    kt.freeze(plan, "all" if side == "full" else 2)
    compile_model(model, keras.optimizers.AdamW(STAGE_LR, weight_decay=WEIGHT_DECAY))
    clock = EpochClock()
    keras.utils.set_random_seed(args.seed)
    fit = dict(epochs=args.epochs, batch_size=args.batch_size, callbacks=[clock], verbose=0)
    if side == "cached":
        kt.FreezeSchedule(plan, {0: 2}, cache_frozen=True, verbose=0).fit(x, y, **fit)
    else:
        model.fit(x, y, **fit)
    steady = [epoch["epoch_time"] for epoch in clock.epochs[1:]]
    return {
        "first_epoch": clock.epochs[0]["epoch_time"],
        "steady_epochs": steady,
        "steady_epoch": {
            clock_name: statistics.mean(epoch[clock_name] for epoch in steady)
            for clock_name in ("wall_s", "cpu_s")
        },
        "prefix_pass": clock.epochs[0]["before_epoch"],
        "trainable_params": count_params(model.trainable_weights),
    }


def stage_part(args) -> dict:
    if args.epochs < 2:
        raise SystemExit("--part stage needs --epochs >= 2: epoch 1 includes tracing.")
    (x, y), _ = load_text(args)
    model = text_model(kt.load_backbone("minilm_l6"), args)
    plan = groups_that_train(model)
    initial_weights = model.get_weights()
    sides = ["full", "frozen", "cached"]
    rounds = []
    for round_index in range(args.rounds):
        shift = round_index % len(sides)
        result = {}
        for side in sides[shift:] + sides[:shift]:
            result[side] = run_stage_side(side, model, plan, initial_weights, x, y, args)
            steady = result[side]["steady_epoch"]
            print(
                f"round {round_index} {side}: steady epoch wall {steady['wall_s']:.1f} s, "
                f"cpu {steady['cpu_s']:.1f} s; prefix pass "
                f"{result[side]['prefix_pass']['wall_s']:.1f} s",
                flush=True,
            )
        rounds.append(result)
    ratios = {
        f"{side}_over_full": {
            clock: [
                r[side]["steady_epoch"][clock] / r["full"]["steady_epoch"][clock] for r in rounds
            ]
            for clock in ("wall_s", "cpu_s")
        }
        for side in ("frozen", "cached")
    }
    for name, values in ratios.items():
        print(
            f"median steady-epoch ratio {name}: wall {statistics.median(values['wall_s']):.3f}, "
            f"cpu {statistics.median(values['cpu_s']):.3f}"
        )
    return {"groups": plan.names, "rounds": rounds, "ratios": ratios}


# --- part "recipe" -------------------------------------------------------------


def train_head(side, model, x, y, args) -> dict:
    """The head on the frozen encoder: `model.fit` (plain) or `kt.FeatureCache`."""
    encoder = model.layers[0]
    encoder.trainable = False
    compile_model(model, keras.optimizers.Adam(HEAD_LR))
    keras.utils.set_random_seed(args.seed)
    start = _now()
    if side == "plain":
        model.fit(x, y, epochs=args.head_epochs, batch_size=args.batch_size, verbose=0)
    else:
        kt.FeatureCache(model, batch_size=args.batch_size).fit(
            x, y, epochs=args.head_epochs, batch_size=args.batch_size, verbose=0
        )
    encoder.trainable = True
    return _since(start)


def fine_tune(side, model, x, y, args) -> dict:
    plan = groups_that_train(model)
    total_steps = args.recipe_epochs * -(-len(y) // args.batch_size)
    adamw = keras.optimizers.AdamW(warmup_cosine(args.lr, total_steps), weight_decay=WEIGHT_DECAY)
    compile_model(model, kt.DiscriminativeLR(adamw, plan, decay=args.decay))
    schedule = kt.FreezeSchedule(plan, RECIPE_SCHEDULE, cache_frozen=side == "cached", verbose=0)
    stages = EpochClock(schedule)
    keras.utils.set_random_seed(args.seed)
    start = _now()
    fit = dict(epochs=args.recipe_epochs, batch_size=args.batch_size, verbose=0)
    if side == "cached":
        schedule.fit(x, y, callbacks=[stages], **fit)
    else:
        model.fit(x, y, callbacks=[schedule, stages], **fit)
    return {"total": _since(start), "epochs": stages.epochs, "groups": plan.names}


def recipe_part(args) -> dict:
    (x, y), (x_test, y_test) = load_text(args)
    backbone = kt.load_backbone("minilm_l6")
    model = text_model(backbone, args)
    initial_weights = model.get_weights()
    results = {}
    for side in args.sides.split(","):
        model.set_weights(initial_weights)
        head = train_head(side, model, x, y, args)
        tuned = fine_tune(side, model, x, y, args)
        logits = model.predict(x_test, batch_size=256, verbose=0)
        accuracy = float(np.mean(np.argmax(logits, axis=-1) == y_test))
        results[side] = {"head": head, **tuned, "test_accuracy": accuracy}
        results[side]["end_to_end"] = _total([head, tuned["total"]])
        if args.save_weights and side == "cached":
            model.save_weights(args.save_weights)
        print(
            f"{side}: head {head['wall_s']:.0f} s, fine-tuning {tuned['total']['wall_s']:.0f} s "
            f"wall ({tuned['total']['cpu_s']:.0f} s cpu), accuracy {accuracy:.4f}",
            flush=True,
        )
    if "cached" in results:
        for other in ("uncached", "plain"):
            if other in results:
                for part in ("total", "end_to_end"):
                    for clock in ("wall_s", "cpu_s"):
                        ratio = results[other][part][clock] / results["cached"][part][clock]
                        print(f"{other} / cached, {part} {clock}: {ratio:.2f}x")
    return results


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("stage", "recipe"), default="stage")
    parser.add_argument(
        "--num-samples", type=int, default=None, help="training sentences (stage: 512, recipe: all)"
    )
    parser.add_argument("--num-test", type=int, default=None, help="recipe: test sentences")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3, help="stage: epochs a side")
    parser.add_argument("--rounds", type=int, default=2, help="stage: rounds")
    parser.add_argument("--head-epochs", type=int, default=10, help="recipe: head epochs")
    parser.add_argument("--recipe-epochs", type=int, default=3, help="recipe: fine-tuning epochs")
    parser.add_argument("--lr", type=float, default=1e-4, help="recipe: peak rate, top group")
    parser.add_argument("--decay", type=float, default=1.2, help="recipe: rate ratio per group")
    parser.add_argument("--sides", default="cached,uncached,plain", help="recipe: sides to run")
    parser.add_argument("--seed", type=int, default=0, help="weights and shuffling seed")
    parser.add_argument(
        "--save-weights",
        help="recipe: save the cached side's fine-tuned model here (`.weights.h5`), e.g. as "
        "distillation.py's --text-teacher-weights",
    )
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.num_samples is None and args.part == "stage":
        args.num_samples = 512
    part = stage_part if args.part == "stage" else recipe_part
    result = {
        "backend": keras.backend.backend(),
        "versions": {"keras": keras.__version__},
        "settings": vars(args),
        args.part: part(args),
    }
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
