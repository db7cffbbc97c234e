"""Which process of a multi-process job this is, and how the processes agree.

A JAX multi-process job (`jax.distributed.initialize`, then a
`keras.distribution` over every process's devices) runs the same `fit` in
every process: callbacks run in each, in lockstep. A callback that writes
files lets one process write them (`is_writer`, `this_process_only`), makes
the others wait for the write (`barrier`), and checks that every process
read the same thing (`same_in_every_process`). Every process must call
`barrier` and `same_in_every_process` at the same point of training, in the
same order: they are collective operations.

On one process (any backend, or JAX without `jax.distributed`) the index is
0, the count 1, and the collectives do nothing.
"""

from __future__ import annotations

import contextlib

import keras
import numpy as np


def process_index() -> int:
    """This process's index in the job (0 on one process)."""
    if keras.backend.backend() != "jax":
        return 0
    import jax

    return jax.process_index()


def process_count() -> int:
    """The number of processes in the job (1 on one process)."""
    if keras.backend.backend() != "jax":
        return 1
    import jax

    return jax.process_count()


def is_writer() -> bool:
    """True in the one process that writes shared files: process 0."""
    return process_index() == 0


@contextlib.contextmanager
def this_process_only():
    """A block that one process runs alone, such as writing a file.

    Keras variables made inside (saving weights makes a reference optimizer)
    stay on this process's devices instead of joining the current
    `keras.distribution` distribution: placing a value over every
    process's devices is a collective operation, which would wait for
    processes that never run the block.
    """
    distribution = keras.distribution.distribution()
    keras.distribution.set_distribution(None)
    try:
        yield
    finally:
        keras.distribution.set_distribution(distribution)


def barrier(name: str) -> None:
    """Waits until every process has reached the barrier `name`."""
    if process_count() == 1:
        return
    from jax.experimental import multihost_utils

    multihost_utils.sync_global_devices(name)


def same_in_every_process(value: int, what: str, fix: str = "") -> int:
    """`value`, after checking that every process holds the same one.

    Otherwise raises a `ValueError` naming `what`, each process's value and
    the `fix`.
    """
    count = process_count()
    if count == 1:
        return value
    from jax.experimental import multihost_utils

    values = np.asarray(multihost_utils.process_allgather(np.asarray(value, dtype=np.int64)))
    values = [int(v) for v in values.reshape(count)]
    if len(set(values)) > 1:
        seen = ", ".join(f"process {index}: {found}" for index, found in enumerate(values))
        raise ValueError(f"The processes of this job disagree on {what} ({seen}). {fix}".strip())
    return value
