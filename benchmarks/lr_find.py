"""Cost of `kt.lr_find` against `model.fit` over the same number of batches.

`lr_find` runs one batch per epoch (so each epoch's loss is that batch's and
the rate can be set between batches on every backend), snapshots and restores
the model and optimizer variables. This measures what that costs per step.

Usage: python benchmarks/lr_find.py [--backend tensorflow] [--steps 100] [--rounds 3]
(each backend in its own process: without --backend it runs all three).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

MODELS = {
    # name: (input size, hidden sizes, batch size)
    "tiny MLP 8-16-1": (8, [16], 32),
    "MLP 784-1024-1024-1": (784, [1024, 1024], 128),
}


def run_backend(backend: str, steps: int, rounds: int) -> list[dict]:
    os.environ["KERAS_BACKEND"] = backend
    import keras
    import numpy as np

    import keras_transfer.lr_finder as lr_finder

    rows = []
    for name, (inputs, hidden, batch_size) in MODELS.items():
        rng = np.random.default_rng(0)
        # Exactly `steps` batches: one epoch of `fit` is the same batches.
        x = rng.normal(size=(batch_size * steps, inputs)).astype("float32")
        y = rng.normal(size=(batch_size * steps, 1)).astype("float32")
        keras.utils.set_random_seed(0)
        layers = [keras.Input((inputs,))]
        layers += [keras.layers.Dense(units, activation="relu") for units in hidden]
        model = keras.Sequential([*layers, keras.layers.Dense(1)])
        model.compile(keras.optimizers.Adam(1e-3), "mse")

        def fit_steps(model=model, x=x, y=y, batch_size=batch_size):
            history = model.fit(x, y, batch_size=batch_size, epochs=1, verbose=0)
            assert len(history.history["loss"]) == 1

        def find(model=model, x=x, y=y, batch_size=batch_size):
            result = lr_finder.lr_find(
                model, (x, y), num_steps=steps, batch_size=batch_size, divergence_factor=None
            )
            assert len(result.losses) == steps

        fit_steps()  # traces the train step for both
        find()
        times = {"fit": [], "lr_find": []}
        for round_index in range(rounds):
            order = [("fit", fit_steps), ("lr_find", find)]
            for label, function in order if round_index % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                function()
                times[label].append(time.perf_counter() - start)
        fit_ms = 1000 * statistics.median(times["fit"]) / steps
        find_ms = 1000 * statistics.median(times["lr_find"]) / steps
        rows.append(
            {
                "backend": backend,
                "model": name,
                "batch": batch_size,
                "fit_ms_per_step": fit_ms,
                "lr_find_ms_per_step": find_ms,
                "ratio": find_ms / fit_ms,
                "extra_ms_per_step": find_ms - fit_ms,
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--backend")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    if args.backend:
        print(json.dumps(run_backend(args.backend, args.steps, args.rounds)))
        return
    rows = []
    for backend in ("tensorflow", "jax", "torch"):
        command = [sys.executable, __file__, "--backend", backend]
        command += ["--steps", str(args.steps), "--rounds", str(args.rounds)]
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows += json.loads(output.strip().splitlines()[-1])
    print("| backend | model | batch | fit ms/step | lr_find ms/step | ratio | extra ms/step |")
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        print(
            f"| {row['backend']} | {row['model']} | {row['batch']} | "
            f"{row['fit_ms_per_step']:.2f} | {row['lr_find_ms_per_step']:.2f} | "
            f"{row['ratio']:.2f} | {row['extra_ms_per_step']:.2f} |"
        )


if __name__ == "__main__":
    main()
