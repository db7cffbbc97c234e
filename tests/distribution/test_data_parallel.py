"""Data-parallel training on 4 logical CPU devices matches one device.

TensorFlow: `tf.distribute.MirroredStrategy` (TPUStrategy takes the same
replica-context code path). JAX: `keras.distribution.DataParallel`. The runs
happen in one subprocess per backend (`data_parallel_runs.py`), because the
logical devices must exist before TensorFlow or JAX start. Each scenario
trains from the same weights on the same global batches of 16, once on one
device and once split over 4; weights and epoch logs must agree.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

BACKEND = keras.backend.backend()
SCRIPT = Path(__file__).with_name("data_parallel_runs.py")

pytestmark = pytest.mark.skipif(
    BACKEND not in ("tensorflow", "jax"),
    reason="Keras distributes training with tf.distribute (TensorFlow) and "
    "keras.distribution (JAX); the PyTorch backend has neither.",
)

SCENARIOS = [
    "freeze_schedule_dlr",
    "distillation_dlr",
    "domain_adaptation_freeze_schedule",
    "domain_confusion",
    "domain_coral",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    output = tmp_path_factory.mktemp("data_parallel") / "runs.json"
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    if BACKEND == "jax":
        flags = env.get("XLA_FLAGS", "")
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count=4".strip()
    scenarios = SCENARIOS + (["model_parallel_freeze_schedule_dlr"] if BACKEND == "jax" else [])
    completed = subprocess.run(
        [sys.executable, str(SCRIPT), str(output), *scenarios],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if completed.returncode != 0:
        pytest.fail(f"{SCRIPT.name} failed:\n{completed.stderr[-4000:]}")
    return json.loads(output.read_text())


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_runs_on_four_replicas_from_the_same_start(runs, scenario):
    single, parallel = runs[scenario]["single"], runs[scenario]["data_parallel"]
    assert single["backend"] == parallel["backend"] == BACKEND
    assert (single["devices"], parallel["devices"]) == (1, 4)
    kernel_shape = np.shape(next(iter(single["weights"].values())))
    for placed, devices in ((single["placement"], 1), (parallel["placement"], 4)):
        # Replicated: every device holds the whole kernel and its optimizer slot.
        assert placed["kernel"] == placed["optimizer_slot"]
        assert placed["kernel"] == {"devices": devices, "shard_shape": list(kernel_shape)}
    assert single["logs"]["loss"][-1] < single["logs"]["loss"][0]


@pytest.mark.skipif(BACKEND != "jax", reason="keras.distribution.ModelParallel is JAX-only.")
def test_model_parallel_shards_weights_and_optimizer_slots_alike(runs):
    scenario = "model_parallel_freeze_schedule_dlr"
    single, sharded = runs[scenario]["single"], runs[scenario]["data_parallel"]
    assert sharded["placement"]["kernel"] == {"devices": 4, "shard_shape": [6, 4]}
    assert sharded["placement"]["optimizer_slot"] == sharded["placement"]["kernel"]
    assert single["weights"].keys() == sharded["weights"].keys()
    for path, value in single["weights"].items():
        np.testing.assert_allclose(sharded["weights"][path], value, atol=1e-5, err_msg=path)
    for key, values in single["logs"].items():
        np.testing.assert_allclose(sharded["logs"][key], values, rtol=1e-5, err_msg=key)


# MirroredStrategy's all-reduce sums the replicas' gradients in an order that
# varies between runs; over several steps the float round-off exceeded 1e-5
# once in three runs here (domain_confusion; the size was not recorded), and
# in CI it moved domain_confusion's first-epoch loss by 4.8e-5 relative
# (2.12194 against 2.12184). The bugs these tests exist for (a loss not divided
# by the replica count) moved weights by ~3e-3.
WEIGHT_ATOL = 1e-4 if BACKEND == "tensorflow" else 1e-5
LOG_RTOL = 2e-4 if BACKEND == "tensorflow" else 1e-5


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_weights_match_one_device(runs, scenario):
    single, parallel = runs[scenario]["single"], runs[scenario]["data_parallel"]
    assert single["weights"].keys() == parallel["weights"].keys()
    for path, value in single["weights"].items():
        np.testing.assert_allclose(parallel["weights"][path], value, atol=WEIGHT_ATOL, err_msg=path)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_epoch_logs_match_one_device(runs, scenario):
    single, parallel = runs[scenario]["single"], runs[scenario]["data_parallel"]
    assert single["logs"].keys() == parallel["logs"].keys()
    for key, values in single["logs"].items():
        np.testing.assert_allclose(
            parallel["logs"][key], values, rtol=LOG_RTOL, atol=1e-6, err_msg=key
        )
