"""Training killed with SIGKILL and resumed ends where the uninterrupted run
ends: weights, optimizer state, freeze stage, rate multipliers and schedule
position. Each run is its own process (tests/resume_job.py)."""

import os
import signal
import subprocess
import sys

import keras
import numpy as np
import pytest

JOB = os.path.join(os.path.dirname(__file__), "resume_job.py")
# A killed and relaunched job takes three processes of 10-25 s each. Each
# backend resumes one of the three training models, so that CI's three runs
# (one per backend) cover all of them; in-process resume tests of every model
# run on every backend (tests/callbacks, tests/freezing, tests/multitask).
MODEL = {"tensorflow": "finetune", "jax": "adaptation", "torch": "distillation"}[
    keras.backend.backend()
]
# Same process layout, same data order: only float round-off may differ.
TOLERANCE = 1e-6


def run_job(model, backup_dir, out, *options):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, JOB, model, str(backup_dir), str(out), *options],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def final_state(path):
    with np.load(path) as arrays:
        return {key: arrays[key] for key in arrays.files}


def max_difference(first, second):
    assert sorted(first) == sorted(second)
    return max(float(np.max(np.abs(first[key] - second[key]))) for key in first)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    cache = {}

    def state(model):
        if model not in cache:
            folder = tmp_path_factory.mktemp(f"full_{model}")
            done = run_job(model, folder / "backup", folder / "final.npz")
            assert done.returncode == 0, done.stderr[-3000:]
            cache[model] = final_state(folder / "final.npz")
        return cache[model]

    return state


def kill_then_resume(tmp_path, model, kill_options, backup_options=()):
    backup = tmp_path / "backup"
    killed = run_job(model, backup, tmp_path / "never.npz", *kill_options, *backup_options)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (tmp_path / "never.npz").exists()
    assert os.listdir(backup), "the killed run left no backup to resume from"
    resumed = run_job(model, backup, tmp_path / "resumed.npz", *backup_options)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return final_state(tmp_path / "resumed.npz")


def test_keras_backup_and_restore_resumes_mid_stage(tmp_path, uninterrupted):
    # Killed in epoch 3, batch 1: stage 2 (epochs 2-3) is half done.
    resumed = kill_then_resume(tmp_path, MODEL, ["--kill-at", "3", "1"], ["--keras-backup"])
    difference = max_difference(resumed, uninterrupted(MODEL))
    print(f"{MODEL}: max |resumed - uninterrupted| = {difference:.3g}")
    assert difference <= TOLERANCE


def test_safe_backup_and_restore_survives_a_kill_while_writing_a_backup(tmp_path, uninterrupted):
    # Dies after epoch 3's weights are on disk, before its manifest: the
    # window in which Keras' own callback pairs new weights with the old
    # epoch number. (Its in-process tests cover a plain mid-epoch kill.)
    resumed = kill_then_resume(tmp_path, MODEL, ["--kill-while-saving", "3"])
    assert max_difference(resumed, uninterrupted(MODEL)) <= TOLERANCE
