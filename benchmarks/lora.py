"""LoRA on MiniLM against full fine-tuning: accuracy, parameters, adapter size, step time, memory.

Each arm trains `transfer_accuracy.py`'s text classifier (real MiniLM-L6,
mean-pooled `sequence_output`, `Dense(2)`) on the VADER movie sentences and is
scored on the fixed 2,113-sentence test split:

- `full`: every layer trains (AdamW, warm-up + cosine to `--full-lr`);
- `qv<r>`: `kt.enable_lora(plan, rank=r, layers="query|value")`, the LoRA
  paper's placement: only the factors and the head train (`--lora-lr`);
- `dense<r>`: LoRA on every dense layer (attention projections and the
  feed-forward layers) of the transformer groups.

Every arm starts from the pretrained weights and the same head initialisation,
for `--epochs` epochs of batch `--batch-size`. Each (arm, seed) runs in a fresh
process (`--worker`), so that the peak memory it reports is its own: the peak
resident set size on CPU, the device's peak bytes in use on a GPU (TensorFlow
and JAX). Reported per arm: test accuracy (mean ± std over `--seeds`),
trainable and LoRA parameters, the `kt.save_adapters` file size, the median
train step time after the first epoch, and the peak memory, with the step
time and memory relative to `full` in the same run.

Usage (KERAS_BACKEND selects the backend):

    KERAS_BACKEND=jax python benchmarks/lora.py --json lora_jax.json
    KERAS_BACKEND=tensorflow python benchmarks/lora.py --arms full,qv8 --seeds 1 --max-train 512
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

import keras
import numpy as np

ARM_PATTERN = re.compile(r"^(full|qv(\d+)|dense(\d+))$")
DEFAULT_ARMS = "full,qv4,qv8,qv16,dense4,dense8,dense16"
WORKER_PREFIX = "LORA_RESULT "


class StepClock(keras.callbacks.Callback):
    """Wall seconds of each train step after the first epoch (which traces),
    or after the first `TRACING_STEPS` steps of a one-epoch run."""

    TRACING_STEPS = 3

    def __init__(self):
        super().__init__()
        self.seconds: list[float] = []

    def on_train_batch_begin(self, batch, logs=None):
        self._start = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        one_epoch = self.params.get("epochs", 1) == 1
        if self._epoch > 0 or (one_epoch and batch >= self.TRACING_STEPS):
            self.seconds.append(time.perf_counter() - self._start)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch


def peak_memory_bytes() -> dict:
    """The process's peak resident memory and, on a GPU, the device's peak bytes in use."""
    peaks = {"host_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}
    backend = keras.backend.backend()
    try:
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            if device.platform == "gpu":
                peaks["device"] = device.memory_stats()["peak_bytes_in_use"]
        elif backend == "tensorflow":
            import tensorflow as tf

            if tf.config.list_physical_devices("GPU"):
                peaks["device"] = tf.config.experimental.get_memory_info("GPU:0")["peak"]
        elif backend == "torch":
            import torch

            if torch.cuda.is_available():
                peaks["device"] = torch.cuda.max_memory_allocated()
    except (KeyError, RuntimeError, ValueError):
        pass
    return peaks


def run_arm(arm: str, seed: int, args) -> dict:
    """Trains one arm with one seed in this process; returns its measurements."""
    from feature_cache import text_encoder, tokenize
    from transfer_accuracy import (
        WEIGHT_DECAY,
        classifier,
        compile_model,
        groups_that_train,
        warmup_cosine,
    )

    import keras_transfer as kt
    from keras_transfer.groups.layer_variables import count_params

    (x_train, y_train), (x_test, y_test) = kt.datasets.load_vader("movies")
    x_train, y_train = x_train[: args.max_train], y_train[: args.max_train]
    x_test, y_test = x_test[: args.max_test], y_test[: args.max_test]
    x, x_test_ids = tokenize(x_train, args.seq_len), tokenize(x_test, args.seq_len)
    keras.utils.set_random_seed(seed)
    encoder = text_encoder(kt.load_backbone("minilm_l6"), args.seq_len, inference_only=False)
    model = classifier(encoder, (args.seq_len,), "int32", 2)
    plan = groups_that_train(model)
    match = ARM_PATTERN.match(arm)
    rank = int(match.group(2) or match.group(3) or 0)
    result = {"arm": arm, "seed": seed, "rank": rank}
    if rank:
        layers = "query|value" if arm.startswith("qv") else None
        summary = kt.enable_lora(plan, rank=rank, layers=layers)
        result["lora_params"] = summary.lora_params
        result["lora_layers"] = len(summary.layers)
    steps_per_epoch = -(-len(y_train) // args.batch_size)
    if args.epochs == 1 and steps_per_epoch <= StepClock.TRACING_STEPS:
        raise SystemExit(
            f"{steps_per_epoch} steps in one epoch leave no step to time after the "
            f"{StepClock.TRACING_STEPS} that trace: give more --max-train or --epochs 2."
        )
    total_steps = args.epochs * steps_per_epoch
    peak_lr = args.lora_lr if rank else args.full_lr
    optimizer = keras.optimizers.AdamW(
        warmup_cosine(peak_lr, total_steps), weight_decay=WEIGHT_DECAY
    )
    compile_model(model, optimizer)
    result["trainable_params"] = count_params(model.trainable_weights)
    result["total_params"] = model.count_params()
    clock = StepClock()
    start = time.perf_counter()
    model.fit(
        x, y_train, epochs=args.epochs, batch_size=args.batch_size, callbacks=[clock], verbose=2
    )
    result["train_s"] = time.perf_counter() - start
    result["step_s"] = statistics.median(clock.seconds)
    logits = model.predict(x_test_ids, batch_size=256, verbose=0)
    result["test_accuracy"] = float(np.mean(np.argmax(logits, axis=-1) == y_test))
    if rank:
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "adapters.npz")
            kt.save_adapters(model, path)
            result["adapter_bytes"] = os.path.getsize(path)
    result["peak_memory_bytes"] = peak_memory_bytes()
    return result


def run_in_worker(arm: str, seed: int, argv: list[str]) -> dict:
    """Runs one (arm, seed) in a fresh Python process; returns its result."""
    command = [sys.executable, os.path.abspath(__file__), *argv, "--worker", arm, str(seed)]
    completed = subprocess.run(
        command, capture_output=True, text=True, cwd=os.path.dirname(__file__)
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith(WORKER_PREFIX)]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(
            f"arm {arm} seed {seed} failed (exit {completed.returncode}):\n"
            f"{completed.stderr[-4000:]}"
        )
    return json.loads(lines[-1][len(WORKER_PREFIX) :])


def summarise(runs: list[dict]) -> dict:
    """Per arm: accuracy mean ± std, and the other measurements' medians; ratios to `full`."""
    arms: dict[str, dict] = {}
    for arm in dict.fromkeys(run["arm"] for run in runs):
        mine = [run for run in runs if run["arm"] == arm]
        accuracies = [run["test_accuracy"] for run in mine]
        arms[arm] = {
            "accuracy_each": accuracies,
            "accuracy_mean": statistics.mean(accuracies),
            "accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "trainable_params": mine[0]["trainable_params"],
            "trainable_share": mine[0]["trainable_params"] / mine[0]["total_params"],
            "lora_params": mine[0].get("lora_params"),
            "adapter_bytes": mine[0].get("adapter_bytes"),
            "step_s": statistics.median(run["step_s"] for run in mine),
            "peak_memory_bytes": {
                key: statistics.median(run["peak_memory_bytes"][key] for run in mine)
                for key in mine[0]["peak_memory_bytes"]
            },
        }
    if "full" in arms:
        full = arms["full"]
        for values in arms.values():
            values["step_vs_full"] = values["step_s"] / full["step_s"]
            values["memory_vs_full"] = {
                key: value / full["peak_memory_bytes"][key]
                for key, value in values["peak_memory_bytes"].items()
            }
            values["points_vs_full"] = 100 * (values["accuracy_mean"] - full["accuracy_mean"])
    return arms


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--arms", default=DEFAULT_ARMS, help=f"comma-separated; default {DEFAULT_ARMS}"
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--max-train", type=int, default=None, help="training sentences (all)")
    parser.add_argument("--max-test", type=int, default=None, help="test sentences (all)")
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--full-lr", type=float, default=5e-5, help="peak rate, full fine-tuning")
    parser.add_argument("--lora-lr", type=float, default=5e-4, help="peak rate, LoRA arms")
    parser.add_argument("--worker", nargs=2, metavar=("ARM", "SEED"), help=argparse.SUPPRESS)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    for arm in args.arms.split(","):
        if not ARM_PATTERN.match(arm):
            parser.error(f"unknown arm {arm!r}: use full, qv<rank> or dense<rank>")
    return args


def _without_json(argv: list[str]) -> list[str]:
    """`argv` less `--json PATH` (workers report on stdout)."""
    forwarded, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--json":
            skip = True
        elif not item.startswith("--json="):
            forwarded.append(item)
    return forwarded


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        arm, seed = args.worker
        print(WORKER_PREFIX + json.dumps(run_arm(arm, int(seed), args)), flush=True)
        return
    forwarded = _without_json(argv)
    runs = []
    for seed in range(args.seeds):
        for arm in args.arms.split(","):
            runs.append(run_in_worker(arm, seed, forwarded))
            run = runs[-1]
            print(
                f"seed {seed} {arm}: accuracy {run['test_accuracy']:.4f}, trainable "
                f"{run['trainable_params']:,}, step {run['step_s']:.3f} s, peak "
                f"{run['peak_memory_bytes']}",
                flush=True,
            )
    result = {
        "backend": keras.backend.backend(),
        "versions": {"keras": keras.__version__},
        "settings": vars(args),
        "runs": runs,
        "arms": summarise(runs),
    }
    print(json.dumps(result["arms"], indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)


if __name__ == "__main__":
    main()
