"""Throughput of JAX multi-process data-parallel training: N processes against 1.

Trains the same MLP with `kt.DiscriminativeLR(AdamW)` on the same global
batches twice: in one process on one device, then as `--processes` processes
of one JAX job on 127.0.0.1 (gloo CPU collectives, the job started by
`tests/distribution/multi_process.py`), each feeding its share of every global
batch (`kt.process_shard`) under `keras.distribution.DataParallel`. Step times
are taken by a callback at every batch end; the first `--warmup` steps
(tracing, compiling) are left out. It reports the median step time, examples
per second and their ratio, and the CPU time a global batch costs (summed over
the processes): on a machine shared with other jobs, more processes also get
a larger share of its cores, which favours the wall-time ratio; the CPU time
is fairer there.

On one machine the processes share its cores: this measures the cost of the
multi-process machinery (collectives over TCP, one Python process per share),
not the gain of adding machines.

Usage:

    KERAS_BACKEND=jax python benchmarks/multi_process.py --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[1] / "tests" / "distribution"))

import multi_process  # noqa: E402


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=512, help="global batch size")
    parser.add_argument("--width", type=int, default=512, help="units of each hidden layer")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--worker-out", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def train(args, out_path: Path) -> None:
    """One side: trains and writes its step times (process 0 only) to `out_path`."""
    num_processes, process_id = 1, 0
    if multi_process.in_job():
        process_id, num_processes = multi_process.initialize()
    import keras
    import numpy as np

    import keras_transfer as kt

    keras.utils.set_random_seed(0)
    if num_processes > 1:
        import jax

        keras.distribution.set_distribution(
            keras.distribution.DataParallel(devices=jax.devices(), auto_shard_dataset=False)
        )
    model = keras.Sequential(
        [keras.Input((args.width,))]
        + [keras.layers.Dense(args.width, activation="relu") for _ in range(3)]
        + [keras.layers.Dense(10)]
    )
    model.compile(
        kt.DiscriminativeLR(keras.optimizers.AdamW(1e-3), model, decay=2.6),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    rows = args.batch_size * args.steps
    x = rng.normal(size=(rows, args.width)).astype("float32")
    y = rng.integers(0, 10, size=rows).astype("int32")
    if num_processes > 1:
        x, y = kt.process_shard((x, y), args.batch_size)
    times, cpu_times = [], []

    class Clock(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            times.append(time.perf_counter())
            cpu_times.append(time.process_time())

    start = time.perf_counter()
    model.fit(
        x,
        y,
        batch_size=args.batch_size // num_processes,
        epochs=1,
        shuffle=False,
        verbose=0,
        callbacks=[Clock()],
    )
    steps = [later - earlier for earlier, later in zip(times, times[1:])][args.warmup :]
    cpu = [later - earlier for earlier, later in zip(cpu_times, cpu_times[1:])][args.warmup :]
    result = {
        "processes": num_processes,
        "median_step_ms": 1000 * statistics.median(steps),
        "p25_step_ms": 1000 * statistics.quantiles(steps, n=4)[0],
        "p75_step_ms": 1000 * statistics.quantiles(steps, n=4)[2],
        "median_step_cpu_ms": 1000 * statistics.median(cpu),
        "first_steps_s": times[args.warmup] - start,
    }
    result["examples_per_s"] = args.batch_size / (result["median_step_ms"] / 1000)
    out_path.with_suffix(f".{process_id}.json").write_text(json.dumps(result))


def run_side(args, processes: int, folder: Path) -> dict:
    out = folder / f"side{processes}.json"
    argv = [
        "--batch-size",
        args.batch_size,
        "--width",
        args.width,
        "--steps",
        args.steps,
        "--warmup",
        args.warmup,
        "--worker-out",
        out,
    ]
    if processes == 1:
        envs, runner = [{"KERAS_BACKEND": "jax"}], multi_process.run_processes
        workers = runner(HERE, argv, envs, log_dir=folder, timeout=1800)
    else:
        workers = multi_process.run_job(
            HERE, argv, log_dir=folder, num_processes=processes, timeout=1800
        )
    for worker in workers:
        if worker.returncode != 0:
            raise RuntimeError(worker.tail())
    parts = [json.loads(out.with_suffix(f".{i}.json").read_text()) for i in range(processes)]
    result = dict(parts[0])  # Wall times: process 0's.
    result["cpu_ms_per_global_batch"] = sum(part["median_step_cpu_ms"] for part in parts)
    return result


def main() -> None:
    args = parse_args()
    if args.worker_out:
        train(args, Path(args.worker_out))
        return
    with tempfile.TemporaryDirectory() as folder:
        single = run_side(args, 1, Path(folder))
        several = run_side(args, args.processes, Path(folder))
    import jax
    import keras

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()}",
        "versions": {"keras": keras.__version__, "jax": jax.__version__},
        "settings": {k: v for k, v in vars(args).items() if k not in ("json", "worker_out")},
        "one_process": single,
        "several_processes": several,
        "throughput_ratio": several["examples_per_s"] / single["examples_per_s"],
        "cpu_per_global_batch_ratio": (
            several["cpu_ms_per_global_batch"] / single["cpu_ms_per_global_batch"]
        ),
    }
    print(json.dumps(results, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
