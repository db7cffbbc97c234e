"""`process_shard`: the part of each global batch one process of a multi-process job feeds."""

from __future__ import annotations

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer.features.pipeline import is_dataset


def process_shard(
    data,
    global_batch_size: int | None = None,
    *,
    num_processes: int | None = None,
    process_id: int | None = None,
):
    """This process's rows of every global batch, for multi-process training.

    In a JAX multi-process job under `keras.distribution.DataParallel`, each
    process passes `fit` its own share of every global batch and Keras joins
    the shares into one global batch: process 0's rows first, then process
    1's, and so on. `process_shard` cuts that share so that N processes train
    on exactly the global batches one process would: each global batch of
    `global_batch_size` consecutive rows is split into N equal, consecutive
    parts and this process keeps part `process_id`. Fit the result with
    `batch_size=global_batch_size // num_processes` and `shuffle=False`.

    Keras shards only `tf.data` datasets itself (with `auto_shard_dataset=True`,
    the default, under which it refuses arrays): cut arrays here, under a
    distribution made with `auto_shard_dataset=False`. A dataset of global
    batches is cut here too, under such a distribution; each batch of each
    component (the source and target batches of `kt.domain_pairs` may differ
    in size) must divide into N equal parts.

    Args:
        data: an array, or a tuple / list / dict of arrays with the same
            number of rows (e.g. `(x, y)`); or a `tf.data.Dataset` of global
            batches.
        global_batch_size: the global batch size, for arrays (the number of
            rows every step trains on, over all processes). Must be `None`
            for a dataset: its batches are the global batches.
        num_processes: the number of processes; defaults to the current
            `keras.distribution` distribution's (1 without one).
        process_id: this process's data shard; defaults to the current
            distribution's `data_shard_id` (0 without one).

    Returns:
        `data`'s structure with this process's rows (a dataset of this
        process's share of each batch).

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> x = np.arange(10)
    >>> kt.process_shard(x, global_batch_size=4, num_processes=2, process_id=1)
    array([2, 3, 6, 7, 9])
    """
    num_processes, process_id = _processes(num_processes, process_id)
    if is_dataset(data):
        if global_batch_size is not None:
            raise ValueError(
                "A dataset's batches are its global batches: pass `global_batch_size=None` "
                "with a dataset (batch it to the global batch size first)."
            )
        _check_not_sharded_by_keras(num_processes)
        return _dataset_shard(data, num_processes, process_id)
    if global_batch_size is None:
        raise ValueError(
            "`process_shard` needs the `global_batch_size` to cut arrays: the rows every "
            "step trains on, over all processes."
        )
    check_integer(global_batch_size, "global_batch_size", "rows per global batch", low=1)
    if global_batch_size % num_processes:
        raise ValueError(
            f"`global_batch_size`={global_batch_size} does not split into "
            f"{num_processes} equal process batches; use a multiple of {num_processes}."
        )
    rows = _row_count(data)
    indices = _shard_rows(rows, global_batch_size, num_processes, process_id)
    return keras.tree.map_structure(lambda array: np.asarray(array)[indices], data)


def _processes(num_processes, process_id) -> tuple[int, int]:
    distribution = keras.distribution.distribution()
    if num_processes is None:
        num_processes = 1 if distribution is None else _data_shards(distribution)
    if process_id is None:
        process_id = 0 if distribution is None else distribution.data_shard_id
    check_integer(num_processes, "num_processes", "processes feeding data", low=1)
    check_integer(process_id, "process_id", "this process's data shard", low=0)
    if process_id >= num_processes:
        raise ValueError(
            f"`process_id`={process_id} must be below `num_processes`={num_processes}."
        )
    return num_processes, process_id


def _data_shards(distribution) -> int:
    # Processes that hold parts of one model replica feed the same data.
    return min(distribution.num_processes, distribution.num_model_replicas)


def _check_not_sharded_by_keras(num_processes: int) -> None:
    distribution = keras.distribution.distribution()
    if (
        num_processes > 1
        and distribution is not None
        and distribution.num_processes > 1
        and distribution.auto_shard_dataset
    ):
        raise ValueError(
            "The current distribution shards `tf.data` datasets by itself "
            "(`auto_shard_dataset=True`): cutting the dataset here too would cut every "
            "batch twice. Either pass `fit` the dataset of global batches as it is, or "
            "create the distribution with `auto_shard_dataset=False` and keep `process_shard`."
        )


def _row_count(data) -> int:
    counts = {len(leaf) for leaf in keras.tree.flatten(data)}
    if len(counts) != 1:
        raise ValueError(
            f"Every array of `data` must have the same number of rows; got {sorted(counts)}."
        )
    return counts.pop()


def _shard_rows(rows: int, global_batch_size: int, num_processes: int, process_id: int):
    starts = np.arange(0, rows, global_batch_size)
    sizes = np.minimum(global_batch_size, rows - starts)
    if sizes.size and sizes[-1] % num_processes:
        raise ValueError(
            f"The last global batch has {sizes[-1]} rows ({rows} rows in batches of "
            f"{global_batch_size}), which do not split into {num_processes} equal parts: "
            "every process must train the same number of steps on equal batches. Drop "
            f"the last {rows % global_batch_size} rows or pad the data to a multiple of "
            f"{num_processes} rows."
        )
    shares = sizes // num_processes
    parts = [
        np.arange(start + process_id * share, start + (process_id + 1) * share)
        for start, share in zip(starts, shares)
    ]
    return np.concatenate(parts) if parts else np.zeros((0,), dtype=int)


def _dataset_shard(dataset, num_processes: int, process_id: int):
    import tensorflow as tf

    def share(leaf):
        size = tf.shape(leaf)[0]
        check = tf.debugging.assert_equal(
            size % num_processes,
            0,
            message=(
                f"process_shard: a batch does not split into {num_processes} equal process "
                "batches; batch the dataset to a multiple of the process count, with "
                "`drop_remainder=True`."
            ),
        )
        with tf.control_dependencies([check]):
            part = size // num_processes
            return leaf[process_id * part : (process_id + 1) * part]

    def cut(*batch):
        batch = batch[0] if len(batch) == 1 else batch
        return tf.nest.map_structure(share, batch)

    return dataset.map(cut)
