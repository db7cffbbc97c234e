"""Overhead of `kt.DiscriminativeLR` and `kt.FreezeSchedule` on a MiniLM-shaped BERT.

Measures, on the TensorFlow and JAX backends, with a randomly initialised
MiniLM-shaped `keras_hub.models.BertBackbone` (6 layers, hidden 384, 12 heads)
plus a `Dense(2)` head on `pooled_output`, batch 16, sequence length 64:

1. The train-step time with `kt.DiscriminativeLR(AdamW, model, decay=2.6)`
   against the same `AdamW` alone, and against `keras.optimizers.MultiOptimizer`
   holding one `AdamW` per layer group at the same rates.
2. The train-step time in each `kt.FreezeSchedule` stage against a model with
   the same layers frozen by hand and compiled afresh, and the wall time that
   each stage change costs (`set_trainable_groups` plus the retraced first step).
3. The same stage changes inside one real `model.fit` (a timing callback around
   `FreezeSchedule`), as a check that the driven-by-hand numbers of part 2 hold.

Every side of a ratio is timed the same way (`model.train_on_batch`, which
returns the loss as a NumPy value, so the step has finished), in the same
process, after warm-up steps, with the variants interleaved step by step in a
rotating order. Both wall time and process CPU time are recorded: on a machine
shared with other jobs, CPU time is the steadier of the two. Ratios are of
medians, and the spread is the 25th-75th percentile of the per-round ratios.
The driver also pools the per-round ratios of repeated runs (`--repeats`).

Usage (KERAS_BACKEND must be set before keras is imported, so each backend runs
in its own process):

    python benchmarks/discriminative_lr_and_freezing.py             # both, README
    python benchmarks/discriminative_lr_and_freezing.py --repeats 2 --json runs.json
    python benchmarks/discriminative_lr_and_freezing.py --backend jax  # one, no README
    python benchmarks/discriminative_lr_and_freezing.py --from-json runs.json  # README only

A run takes about 4-6 minutes per backend on 2 CPU cores, mostly compiling.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from discriminative_lr_and_freezing_report import (
    COMMAND,
    readme_section,
    report,
    summary,
    write_readme,
)

BACKENDS = ("tensorflow", "jax")
BATCH_SIZE = 16
SEQUENCE_LENGTH = 64
VOCABULARY_SIZE = 30522
LEARNING_RATE = 1e-4
WEIGHT_DECAY = 0.004
DECAY = 2.6
SCHEDULE = {0: 1, 1: 3, 2: 5, 3: "all"}
SEED = 0


# ----------------------------------------------------------------------------
# Model, data and optimizers
# ----------------------------------------------------------------------------


def build_model():
    """A MiniLM-shaped BERT backbone with a two-class head, seeded."""
    import keras
    import keras_hub

    keras.utils.set_random_seed(SEED)
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=VOCABULARY_SIZE,
        num_layers=6,
        num_heads=12,
        hidden_dim=384,
        intermediate_dim=1536,
        max_sequence_length=512,
    )
    logits = keras.layers.Dense(2, name="head")(backbone(backbone.input)["pooled_output"])
    return keras.Model(backbone.input, logits, name="minilm_classifier")


def make_batches(num_batches: int) -> tuple[dict, object]:
    """Random token ids and labels for `num_batches` batches (fixed seed)."""
    import numpy as np

    rng = np.random.default_rng(SEED)
    size = num_batches * BATCH_SIZE
    features = {
        "token_ids": rng.integers(0, VOCABULARY_SIZE, (size, SEQUENCE_LENGTH)).astype("int32"),
        "segment_ids": np.zeros((size, SEQUENCE_LENGTH), "int32"),
        "padding_mask": np.ones((size, SEQUENCE_LENGTH), "bool"),
    }
    labels = rng.integers(0, 2, (size,)).astype("int32")
    return features, labels


def compile_model(model, optimizer) -> None:
    """Compiles with the loss only, so the step is the model plus the optimizer."""
    import keras

    model.compile(
        optimizer=optimizer,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )


def adamw(learning_rate: float = LEARNING_RATE):
    """The AdamW every variant wraps or copies."""
    import keras

    return keras.optimizers.AdamW(learning_rate=learning_rate, weight_decay=WEIGHT_DECAY)


def group_rates(model) -> list[tuple[object, float]]:
    """(layer group, learning rate) pairs: ULMFiT decay from the top group down."""
    import keras_transfer as kt

    groups = kt.layer_groups(model)
    top = len(groups) - 1
    return [(group, LEARNING_RATE * DECAY ** -(top - index)) for index, group in enumerate(groups)]


def multi_optimizer(model):
    """`keras.optimizers.MultiOptimizer` with one AdamW per layer group."""
    import keras

    optimizer_of = {}
    for group, rate in group_rates(model):
        optimizer = adamw(rate)
        for variable in group.variables:
            optimizer_of[id(variable)] = optimizer
    return keras.optimizers.MultiOptimizer(lambda variable: optimizer_of[id(variable)])


def discriminative_lr(model):
    """`kt.DiscriminativeLR` around a plain AdamW, ULMFiT decay."""
    import keras_transfer as kt

    return kt.DiscriminativeLR(adamw(), model, decay=DECAY)


# ----------------------------------------------------------------------------
# Timing
# ----------------------------------------------------------------------------


def timed_step(model, batch) -> tuple[float, float]:
    """Wall and process CPU time of one `train_on_batch`.

    `train_on_batch` returns the logs as NumPy values, so the step has
    finished. CPU time (all threads) is less sensitive than wall time to other
    jobs on a shared machine.
    """
    wall, cpu = time.perf_counter(), time.process_time()
    model.train_on_batch(*batch)
    return time.perf_counter() - wall, time.process_time() - cpu


def interleave(models: dict, batch, rounds: int) -> dict[str, dict[str, list[float]]]:
    """Times one step of each model per round, rotating the order each round.

    Returns `{"wall": {name: seconds}, "cpu": {name: seconds}}`.
    """
    names = list(models)
    times = {"wall": {name: [] for name in names}, "cpu": {name: [] for name in names}}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            wall, cpu = timed_step(models[name], batch)
            times["wall"][name].append(wall)
            times["cpu"][name].append(cpu)
    return times


def ratio(times: dict, numerator: str, denominator: str) -> dict:
    """Wall-time ratio of medians with the spread of the per-round ratios, the
    ratio of the fastest steps, and the CPU-time ratio of medians."""
    top, bottom = times["wall"][numerator], times["wall"][denominator]
    per_round = summary([a / b for a, b in zip(top, bottom)])
    return {
        "ratio": statistics.median(top) / statistics.median(bottom),
        "round_p25": per_round["p25"],
        "round_p75": per_round["p75"],
        "min_ratio": min(top) / min(bottom),
        "cpu_ratio": statistics.median(times["cpu"][numerator])
        / statistics.median(times["cpu"][denominator]),
    }


# ----------------------------------------------------------------------------
# Part 1: DiscriminativeLR against plain AdamW and MultiOptimizer
# ----------------------------------------------------------------------------


def bench_optimizers(steps: int, warmup: int) -> dict:
    """Interleaved step times of plain AdamW, DiscriminativeLR and MultiOptimizer."""
    batch = make_batches(1)
    models, first_step = {}, {}
    for name, make_optimizer in (
        ("adamw", lambda model: adamw()),
        ("discriminative_lr", discriminative_lr),
        ("multi_optimizer", multi_optimizer),
    ):
        model = build_model()
        compile_model(model, make_optimizer(model))
        first_step[name] = timed_step(model, batch)[0]
        models[name] = model
    interleave(models, batch, max(warmup - 1, 0))
    times = interleave(models, batch, steps)
    return {
        "first_step_s": first_step,
        "times": times,
        "dlr_vs_adamw": ratio(times, "discriminative_lr", "adamw"),
        "dlr_vs_multi": ratio(times, "discriminative_lr", "multi_optimizer"),
        "dlr_vs_multi_max_abs_diff": max_weight_difference(
            models["discriminative_lr"], models["multi_optimizer"]
        ),
    }


def max_weight_difference(model_a, model_b) -> float:
    """Largest absolute difference between two models' weights (same steps taken)."""
    import numpy as np

    return float(
        max(
            np.max(np.abs(np.asarray(a) - np.asarray(b)))
            for a, b in zip(model_a.get_weights(), model_b.get_weights())
        )
    )


# ----------------------------------------------------------------------------
# Part 2: FreezeSchedule stages against a fresh compile with the same freeze
# ----------------------------------------------------------------------------


def freeze_by_hand(model, groups, count: int) -> None:
    """Sets `trainable` layer by layer, without keras_transfer's freezing code."""
    model.trainable = True
    first_trainable = len(groups) - count
    for index, group in enumerate(groups):
        for layer in group.layers:
            layer.trainable = index >= first_trainable


def trainable_params(model) -> int:
    """The number of trainable scalars."""
    return sum(math.prod(variable.shape) for variable in model.trainable_weights)


def bench_freeze_stages(steps: int, warmup: int) -> list[dict]:
    """Per stage: FreezeSchedule's switch and steps, against a fresh compile."""
    import keras_transfer as kt

    batch = make_batches(1)
    scheduled = build_model()
    compile_model(scheduled, adamw())
    schedule = kt.FreezeSchedule(scheduled, SCHEDULE, verbose=0)
    schedule.on_train_begin()
    reference = build_model()
    groups = kt.layer_groups(reference)
    return [
        bench_one_stage(schedule, scheduled, reference, groups, epoch, batch, steps, warmup)
        for epoch in sorted(SCHEDULE)
    ]


def bench_one_stage(schedule, scheduled, reference, groups, epoch, batch, steps, warmup) -> dict:
    """Enters one stage on both models, then times them interleaved."""
    start = time.perf_counter()
    schedule.on_epoch_begin(epoch)
    switch_s = time.perf_counter() - start
    first_s = timed_step(scheduled, batch)[0]

    count = len(groups) if SCHEDULE[epoch] == "all" else SCHEDULE[epoch]
    start = time.perf_counter()
    freeze_by_hand(reference, groups, count)
    compile_model(reference, adamw())
    compile_s = time.perf_counter() - start
    reference_first_s = timed_step(reference, batch)[0]

    models = {"freeze_schedule": scheduled, "fresh_compile": reference}
    interleave(models, batch, max(warmup - 1, 0))
    times = interleave(models, batch, steps)
    steady = statistics.median(times["wall"]["freeze_schedule"])
    reference_steady = statistics.median(times["wall"]["fresh_compile"])
    return {
        "epoch": epoch,
        "trainable_groups": SCHEDULE[epoch],
        "trainable_params": trainable_params(scheduled),
        "reference_trainable_params": trainable_params(reference),
        "times": times,
        "ratio": ratio(times, "freeze_schedule", "fresh_compile"),
        "switch_s": switch_s,
        "first_step_s": first_s,
        "change_overhead_s": switch_s + first_s - steady,
        "reference_compile_s": compile_s,
        "reference_first_step_s": reference_first_s,
        "reference_overhead_s": compile_s + reference_first_s - reference_steady,
    }


# ----------------------------------------------------------------------------
# Part 3: the stage changes inside one real `fit`
# ----------------------------------------------------------------------------


def fit_timers():
    """Callbacks timing `on_epoch_begin` of the callbacks between them, and steps."""
    import keras

    class EpochBeginStart(keras.callbacks.Callback):
        """Notes when `on_epoch_begin` starts; goes before `FreezeSchedule`."""

        def __init__(self):
            super().__init__()
            self.started = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()

    class StepTimer(keras.callbacks.Callback):
        """Times the stage switch and each step; goes after `FreezeSchedule`."""

        def __init__(self, start: EpochBeginStart):
            super().__init__()
            self.start = start
            self.switch_s: dict[int, float] = {}
            self.steps: dict[int, list[float]] = {}
            self._epoch = 0
            self._batch_start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch
            self.switch_s[epoch] = time.perf_counter() - self.start.started
            self.steps[epoch] = []

        def on_train_batch_begin(self, batch, logs=None):
            self._batch_start = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            float(logs["loss"])  # Waits for an asynchronously dispatched step.
            self.steps[self._epoch].append(time.perf_counter() - self._batch_start)

    start = EpochBeginStart()
    return start, StepTimer(start)


def bench_fit(steps_per_epoch: int) -> list[dict]:
    """One `fit` through every stage of the schedule, timed by callbacks."""
    import keras_transfer as kt

    model = build_model()
    compile_model(model, adamw())
    features, labels = make_batches(steps_per_epoch)
    start, timer = fit_timers()
    model.fit(
        features,
        labels,
        batch_size=BATCH_SIZE,
        epochs=len(SCHEDULE),
        shuffle=False,
        verbose=0,
        callbacks=[start, kt.FreezeSchedule(model, SCHEDULE, verbose=0), timer],
    )
    results = []
    for epoch in sorted(SCHEDULE):
        step_times = timer.steps[epoch]
        steady = statistics.median(step_times[1:])
        results.append(
            {
                "epoch": epoch,
                "switch_s": timer.switch_s[epoch],
                "first_step_s": step_times[0],
                "steady": summary(step_times[1:]),
                "change_overhead_s": timer.switch_s[epoch] + step_times[0] - steady,
            }
        )
    return results


# ----------------------------------------------------------------------------
# One backend
# ----------------------------------------------------------------------------


def run_backend(args) -> dict:
    """Runs every part on the backend this process was started with."""
    import keras

    started = time.perf_counter()
    result = {
        "backend": keras.backend.backend(),
        "versions": {
            name: importlib.metadata.version(name.replace("_", "-"))
            for name in ("keras", "keras_hub", "tensorflow", "jax")
        },
        "steps": args.steps,
        "warmup": args.warmup,
        "fit_steps": args.fit_steps,
    }
    parts = [
        ("optimizers", lambda: bench_optimizers(args.steps, args.warmup)),
        ("stages", lambda: bench_freeze_stages(args.steps, args.warmup)),
    ]
    if args.fit_steps:
        parts.append(("fit", lambda: bench_fit(args.fit_steps)))
    result["settings"] = {
        "batch_size": BATCH_SIZE,
        "sequence_length": SEQUENCE_LENGTH,
        "vocabulary_size": VOCABULARY_SIZE,
        "learning_rate": LEARNING_RATE,
        "weight_decay": WEIGHT_DECAY,
        "decay": DECAY,
        "schedule": str(SCHEDULE),
    }
    result["part_wall_s"] = {}
    for name, bench in parts:
        log(f"[{result['backend']}] {name}")
        part_started = time.perf_counter()
        result[name] = bench()
        result["part_wall_s"][name] = time.perf_counter() - part_started
    result["wall_s"] = time.perf_counter() - started
    return result


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the markdown report."""
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------
# Driver: every backend in its own process, then the README
# ----------------------------------------------------------------------------


def run_children(args) -> list[dict]:
    """Runs each backend (and repeat) in a subprocess and collects its JSON."""
    results = []
    for repeat in range(args.repeats):
        for backend in args.backends:
            with tempfile.TemporaryDirectory() as folder:
                path = Path(folder) / "result.json"
                command = [sys.executable, __file__, "--backend", backend, "--json", str(path)]
                command += child_arguments(args)
                log(f"run {repeat + 1}/{args.repeats}: {' '.join(command)}")
                env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
                subprocess.run(command, env=env, check=True, stdout=subprocess.DEVNULL)
                result = json.loads(path.read_text())
            result["repeat"] = repeat + 1
            result["command"] = measuring_command(sys.argv[1:])
            results.append(result)
    return results


def measuring_command(argv: list[str]) -> str:
    """The command line, less the options that only choose where output goes."""
    kept, skip = [], False
    for argument in argv:
        if skip:
            skip = False
        elif argument in ("--json", "--from-json"):
            skip = True
        elif argument != "--no-readme":
            kept.append(argument)
    return " ".join([COMMAND, *kept])


def child_arguments(args) -> list[str]:
    """The measurement settings, passed on to each backend's process."""
    return [
        "--steps",
        str(args.steps),
        "--warmup",
        str(args.warmup),
        "--fit-steps",
        str(args.fit_steps),
    ]


def parse_args(argv=None):
    """Command-line settings."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=BACKENDS, help="run one backend in this process")
    parser.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    parser.add_argument("--steps", type=int, default=15, help="timed rounds per comparison")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps, first one included")
    parser.add_argument(
        "--fit-steps", type=int, default=5, help="steps per epoch of the `fit` check; 0 skips it"
    )
    parser.add_argument("--repeats", type=int, default=1, help="driver: runs per backend")
    parser.add_argument("--json", help="write the raw results (every run) here")
    parser.add_argument("--no-readme", action="store_true", help="driver: leave README alone")
    parser.add_argument(
        "--from-json", help="driver: report (and README) from a saved `--json` file, no runs"
    )
    return parser.parse_args(argv)


def main(argv=None) -> None:
    """Runs one backend here, or every backend in its own process."""
    args = parse_args(argv)
    if args.backend is not None:
        os.environ["KERAS_BACKEND"] = args.backend
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        result = run_backend(args)
        if args.json:
            Path(args.json).write_text(json.dumps(result))
        print(report([result]))
        return
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
    else:
        results = run_children(args)
    if args.json and not args.from_json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print(report(results))
    if not args.no_readme:
        write_readme(readme_section(results))


if __name__ == "__main__":
    main()
