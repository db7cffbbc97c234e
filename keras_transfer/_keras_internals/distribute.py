"""Distribution: what Keras' TensorFlow trainer cannot run yet.

Keras 3 trains under `tf.distribute.MirroredStrategy` and `TPUStrategy`, but
not under a `MultiWorkerMirroredStrategy` that spans several workers (see
`refuse_multi_worker_strategy`). `tests/distribution/test_multi_worker_tensorflow.py`
reproduces the failure with plain Keras on two workers and fails once Keras
trains there; the refusal should then go.
"""

from __future__ import annotations

import keras

from keras_transfer._keras_internals.optimizers import distribution_strategy

KERAS_ISSUE = "https://github.com/keras-team/keras/issues/20585"


def refuse_multi_worker_strategy(component: str, model_or_optimizer=None) -> None:
    """Raises a `ValueError` if `component` is set up to train on several TF workers.

    With `tf.distribute.MultiWorkerMirroredStrategy` over more than one
    worker, Keras 3's TensorFlow `fit` fails before the first step:
    `Trainer._maybe_symbolic_build` reduces the first batch across the
    workers with `strategy.reduce`, which that strategy cannot do for a
    structure of per-replica values, and raises `ValueError: Attempt to
    convert a value (PerReplica:{...}) ... to a Tensor` (keras-team/keras#20585).
    This refuses earlier, when the library's piece is made or compiled, with
    a message that says what works instead.

    The strategy is `model_or_optimizer`'s: a model's `distribute_strategy`
    (Keras' TensorFlow trainer: the strategy it was built under), an
    optimizer's (`distribution_strategy`), else the one in scope. One worker
    (`num_replicas_in_sync` equal to this worker's devices) is fine. A no-op
    on the JAX and PyTorch backends. Relies on the failure above, pinned by
    `tests/distribution/test_multi_worker_tensorflow.py`, and on Keras'
    TensorFlow `Trainer.distribute_strategy`.
    """
    if keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    strategy = (
        getattr(model_or_optimizer, "distribute_strategy", None)
        or distribution_strategy(model_or_optimizer)
        or tf.distribute.get_strategy()
    )
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    local_replicas = len(strategy.extended.worker_devices)
    if strategy.num_replicas_in_sync <= local_replicas:
        return
    raise ValueError(
        f"{component} cannot train under tf.distribute.MultiWorkerMirroredStrategy "
        f"across several workers ({strategy.num_replicas_in_sync} replicas, "
        f"{local_replicas} on this worker): Keras 3's TensorFlow trainer fails there "
        "before the first step, with 'Attempt to convert a value (PerReplica...) to a "
        f"Tensor' (keras-team/keras#20585, {KERAS_ISSUE}). To train on several machines, "
        "use the JAX backend: call `keras.distribution.initialize()` (or "
        "`jax.distributed.initialize(...)`) on every host, then train under "
        "`keras.distribution.DataParallel`; see docs/distributed.md. On one machine, "
        "`tf.distribute.MirroredStrategy` works."
    )
