"""JAX multi-process training on 127.0.0.1 matches one process.

Two worker processes form one JAX job (`multi_process.run_job`: gloo CPU
collectives, a free port, bounded in time) and train every component under
`keras.distribution.DataParallel(devices=jax.devices(),
auto_shard_dataset=False)`, each process feeding its share of every global
batch (`kt.process_shard`, arrays and `tf.data`). A plain process trains the
same components on the same global batches, on one device
(`multi_process_runs.py`). Both processes must end with identical weights,
within the tolerance of `test_data_parallel.py` of the one-process run.
Then: backups across processes, a SavedModel exported by process 0, and a
worker killed mid-epoch (in the job's last run, to start fewer processes),
whose job is relaunched and resumes.
"""

import json
import signal
from pathlib import Path

import keras
import numpy as np
import pytest
from distribution import multi_process

import keras_transfer as kt

BACKEND = keras.backend.backend()
SCRIPT = Path(__file__).with_name("multi_process_runs.py")
SCENARIOS = ["finetune", "distillation", "distillation_cached", "adaptation", "feature_cache"]
# As test_data_parallel.py on JAX (the runs differ here by up to 6e-8).
WEIGHT_ATOL = 1e-5
# As tests/test_resume.py: same process layout and data order on both sides.
RESUME_TOLERANCE = 1e-6
# How long the surviving process waits for a killed one before JAX ends the job.
HEARTBEAT_TIMEOUT_S = 15
KILL_AT = (2, 1, 1)  # Epoch 2, batch 1, process 1.
EPOCHS = 4  # of the `finetune` run, backed up at each epoch end
STAGED = {"finetune"}  # The scenario with a FreezeSchedule.


def skip_reason():
    if BACKEND != "jax":
        return (
            "Keras 3 trains across processes on the JAX backend (keras.distribution); "
            "TensorFlow's multi-worker status is in test_multi_worker_tensorflow.py, and "
            "PyTorch has no keras.distribution."
        )
    return multi_process.skip_reason()


pytestmark = pytest.mark.skipif(skip_reason() is not None, reason=str(skip_reason()))


def load(folder, scenario, tag) -> dict:
    with np.load(Path(folder) / f"{scenario}.{tag}.npz") as arrays:
        return {key: arrays[key] for key in arrays.files}


def state(arrays) -> dict:
    """Weights and optimizer state."""
    return {k: v for k, v in arrays.items() if k.startswith(("weight/", "optimizer/"))}


def max_difference(first, second) -> float:
    assert sorted(first) == sorted(second)
    return max(float(np.max(np.abs(first[key] - second[key]))) for key in first)


def check_succeeded(workers):
    for worker in workers:
        assert worker.returncode == 0, "\n".join(w.tail() for w in workers)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """The job's workers and folder, which also holds the one-process reference.

    The job runs every scenario, then `finetune_killed`, in which process 1
    kills itself: the job must then end without the test's help.
    """
    folder = tmp_path_factory.mktemp("multi_process")
    workers = multi_process.run_job(
        SCRIPT,
        [folder, *SCENARIOS, "finetune_killed", "--kill-at", *KILL_AT, "--export"],
        log_dir=folder,
        timeout=600,
        fail_fast=False,
        heartbeat_timeout_s=HEARTBEAT_TIMEOUT_S,
        single_process_too=True,
    )
    logs = "\n".join(worker.tail() for worker in workers)
    written = {path.name for path in folder.glob("*.npz")}
    tags = ("process0", "process1", "single")
    expected = {f"{scenario}.{tag}.npz" for scenario in SCENARIOS for tag in tags}
    assert expected <= written, f"missing {sorted(expected - written)}\n{logs}"
    assert workers[2].returncode == 0, logs  # The one-process reference.
    return workers, folder


@pytest.fixture(scope="module")
def runs(job):
    return job[1]


def outcomes(runs, scenario):
    return [load(runs, scenario, tag) for tag in ("process0", "process1", "single")]


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_both_processes_end_identical(runs, scenario):
    first, second, _ = outcomes(runs, scenario)
    # The weights span both processes' devices: one job, not two copies.
    assert first["devices"] == second["devices"] == 2
    assert sorted(first) == sorted(second)
    for key in first:
        if key != "backups_written":  # Process 0 alone writes them.
            np.testing.assert_array_equal(first[key], second[key], err_msg=key)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_weights_match_one_process_on_the_same_global_batches(runs, scenario):
    job, _, single = outcomes(runs, scenario)
    assert single["devices"] == 1
    difference = max_difference(state(job), state(single))
    print(f"{scenario}: max |2 processes - 1 process| = {difference:.3g}")
    for key, value in state(single).items():
        np.testing.assert_allclose(job[key], value, atol=WEIGHT_ATOL, err_msg=key)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_logs_and_freeze_stages_match_one_process(runs, scenario):
    job, _, single = outcomes(runs, scenario)
    logs = sorted(key for key in single if key.startswith("log/"))
    assert logs == sorted(key for key in job if key.startswith("log/"))
    for key in logs:
        np.testing.assert_allclose(job[key], single[key], rtol=1e-5, atol=1e-6, err_msg=key)
    # Trainable variables at every step: stages change at the same step.
    np.testing.assert_array_equal(job["trainable_per_step"], single["trainable_per_step"])
    assert len(set(single["trainable_per_step"])) == (2 if scenario in STAGED else 1)


def test_cached_teacher_outputs_train_as_the_teacher_run_every_step(runs):
    # Each process cached the teacher's outputs on its own shard.
    cached = state(load(runs, "distillation_cached", "process0"))
    uncached = state(load(runs, "distillation", "process0"))
    for key, value in uncached.items():
        np.testing.assert_allclose(cached[key], value, atol=WEIGHT_ATOL, err_msg=key)


def test_process_0_alone_writes_complete_backups(runs):
    first, second, _ = outcomes(runs, "finetune")
    assert (int(first["backups_written"]), int(second["backups_written"])) == (EPOCHS, 0)
    backup = kt.SafeBackupAndRestore(runs / "backup", delete_checkpoint=False)
    assert backup.latest_epoch() == EPOCHS  # The newest manifest and its hash check out.
    assert sorted(path.name for path in (runs / "backup").iterdir()) == [
        "checkpoint-000002.json",
        "checkpoint-000002.weights.h5",
        "checkpoint-000003.json",
        "checkpoint-000003.weights.h5",
    ]


def test_saved_model_exported_by_process_0_serves_the_student(runs):
    tf = pytest.importorskip("tensorflow")
    weights = load(runs, "distillation", "process0")
    x = np.random.default_rng(4).normal(size=(5, 6)).astype("float32")
    hidden = np.tanh(
        x @ weights["weight/student_hidden/kernel"] + weights["weight/student_hidden/bias"]
    )
    logits = (
        hidden @ weights["weight/student_logits/kernel"] + weights["weight/student_logits/bias"]
    )
    expected = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loaded = tf.saved_model.load(str(runs / "saved_model"))  # Keeps its variables alive.
    served = loaded.serving_default(inputs=x)
    np.testing.assert_allclose(served["probabilities"].numpy(), expected, atol=1e-5)


def fake_torn_backup(folder: Path) -> None:
    """A newest backup whose weights file does not match its manifest's hash."""
    manifests = sorted(folder.glob("checkpoint-*.json"))
    manifest = json.loads(manifests[-1].read_text())
    number = manifest["number"] + 1
    manifest["number"] = number
    (folder / f"checkpoint-{number:06d}.weights.h5").write_bytes(b"cut short")
    (folder / f"checkpoint-{number:06d}.json").write_text(json.dumps(manifest))


def test_killed_worker_ends_the_job_and_a_relaunch_resumes_from_the_last_backup(job):
    workers, folder = job
    killed, survivor = workers[KILL_AT[2]], workers[0]
    assert f"SIGKILL at epoch {KILL_AT[0]}, batch {KILL_AT[1]}" in killed.output
    assert killed.returncode == -signal.SIGKILL, killed.tail()
    # JAX ended the other process (fail_fast=False: the test did not).
    assert survivor.returncode not in (None, 0), survivor.tail()
    assert not list(folder.glob("finetune_killed.*.npz"))
    backup_dir = folder / "backup_killed"
    assert kt.SafeBackupAndRestore(backup_dir).latest_epoch() == KILL_AT[0]
    fake_torn_backup(backup_dir)

    logs = folder / "resumed"
    logs.mkdir()
    resumed = multi_process.run_job(SCRIPT, [folder, "finetune_killed"], log_dir=logs)
    check_succeeded(resumed)
    uninterrupted = state(load(folder, "finetune", "process0"))
    for worker in resumed:
        assert "skipping backup 2" in worker.output
        final = load(folder, "finetune_killed", f"process{worker.process_id}")
        assert len(final["trainable_per_step"]) == 8  # Epochs 2 and 3 only.
        difference = max_difference(state(final), uninterrupted)
        print(f"process {worker.process_id}: max |resumed - uninterrupted| = {difference:.3g}")
        assert difference <= RESUME_TOLERANCE
