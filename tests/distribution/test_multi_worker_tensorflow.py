"""TensorFlow on several workers: what Keras 3 does today, and what we say.

Two TensorFlow workers on 127.0.0.1 (`TF_CONFIG`, free ports) form one
`tf.distribute.MultiWorkerMirroredStrategy` job
(`multi_process_tensorflow_runs.py`). Plain Keras fails in `fit`
(keras-team/keras#20585); the library's pieces refuse earlier, naming the
issue and the JAX route. When upstream fixes Keras, the first test fails and
says what to change.
"""

import json

import keras
import pytest
from distribution.multi_process import free_ports, run_processes

BACKEND = keras.backend.backend()
SCRIPT = "multi_process_tensorflow_runs.py"
PIECES = ["DiscriminativeLR", "FreezeSchedule", "DistillationModel", "DomainAdaptationModel"]

pytestmark = pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="tf.distribute.MultiWorkerMirroredStrategy is the TensorFlow backend's; "
    "multi-process JAX training is tested in test_multi_process.py.",
)


@pytest.fixture(scope="module")
def workers(tmp_path_factory, request):
    folder = tmp_path_factory.mktemp("multi_worker_tensorflow")
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    envs = [
        {
            "KERAS_BACKEND": "tensorflow",
            "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}}),
        }
        for i in range(2)
    ]
    script = request.path.with_name(SCRIPT)
    for worker in run_processes(script, [folder], envs, log_dir=folder, timeout=300):
        assert worker.returncode == 0, worker.tail()
    return [json.loads((folder / f"worker{i}.json").read_text()) for i in range(2)]


def test_plain_keras_fit_fails_on_two_workers(workers):
    for results in workers:
        assert results["replicas"] == 2
        outcome = results["plain_keras_fit"]
        assert outcome.startswith("ValueError: Attempt to convert a value (PerReplica"), (
            "Keras' own fit under MultiWorkerMirroredStrategy no longer fails as in "
            "keras-team/keras#20585; it gave: "
            f"{outcome[:300]!r}. If it trains now, remove `refuse_multi_worker_strategy` "
            "(keras_transfer/_keras_internals/distribute.py), test the pieces on two "
            "workers and update docs/distributed.md."
        )


@pytest.mark.parametrize("piece", PIECES)
def test_library_pieces_refuse_with_the_issue_and_the_jax_route(workers, piece):
    for results in workers:
        outcome = results[piece]
        assert outcome.startswith(f"ValueError: kt.{piece} cannot train under "), outcome
        assert "keras-team/keras#20585" in outcome
        assert "JAX backend" in outcome and "keras.distribution.DataParallel" in outcome
        assert "MirroredStrategy` works" in outcome
