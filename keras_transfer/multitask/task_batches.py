"""`task_batches`: one training stream from one dataset per task."""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer.multitask._batch_format import INPUTS, TASK
from keras_transfer.multitask._sampling import batches_per_task, check_sampling, task_probabilities

_MAX_SHUFFLE_BUFFER = 10_000
# Strides that spread (task seed, epoch, pass) over distinct shuffle seeds.
_EPOCH_STRIDE, _PASS_STRIDE = 7919, 104729


def task_batches(
    data: dict,
    batch_size: int = 32,
    sampling: str = "proportional",
    temperature: float = 2.0,
    seed: int | None = None,
):
    """Mixes one dataset per task into one stream of single-task batches.

    Multi-task data comes as separate datasets of different sizes (movie
    reviews with sentiment, tweets with sentiment, news with topics). This
    builds the stream `kt.MultiTaskModel.fit` trains on: every batch holds
    examples of one task only, tagged with that task so that the model routes
    it to its head, and the sampling rule decides how often each task comes:

    - `"proportional"` (default): one epoch is one pass over every task's
      data, `ceil(n_k / batch_size)` batches of task `k` in shuffled order
      (each example once; the last batch of a task may be short);
    - `"uniform"`: every task gets the same share of the epoch's batches;
    - `"temperature"`: task `k` gets a share `p_k ∝ n_k ** (1 / temperature)`
      (1 is proportional, larger values flatten towards uniform; 2 is
      common), so small tasks are up-sampled without drowning large ones.

    **Epoch length.** Whatever the rule, an epoch has
    `sum_k ceil(n_k / batch_size)` batches, the length of one pass over all
    tasks (`len(stream)`). With `"uniform"` and `"temperature"` the batches are
    shared out by the task probabilities (largest remainders, and at least one
    batch per task), every batch is full, and a task cycles through its
    reshuffled data as often as its share needs, or sees a fresh random part
    of it each epoch.

    **Determinism.** Epoch `e` is a function of `seed` and `e` alone (task
    order, shuffles and which examples fill the batches), so a resumed run
    (`kt.SafeBackupAndRestore`) replays exactly the epochs an uninterrupted
    one would: `kt.MultiTaskModel.fit` tells the stream which epoch it is in.
    Iterated by hand, the stream moves on one epoch per pass;
    `stream.task_stream.set_epoch(e)` picks the epoch of the next pass.

    Batches are `({"inputs": x, "task": tags}, {task: labels, ...})`: `tags`
    is an int32 vector holding the batch's task index (its position in the
    sorted task names), and the labels dict has an entry for every task, the
    batch's own labels under its task and zeros under the others (one batch
    structure for the whole stream, as `tf.data` needs). Floating-point inputs
    and labels are cast to `keras.config.floatx()`. The stream is a
    `tf.data.Dataset`, which `fit` reads on every backend; its
    `task_stream` attribute describes it (tasks, sizes, batches per task,
    probabilities).

    Args:
        data: a dict mapping each task name to `(x, y)` arrays (`x` may be a
            dict of arrays) or to a `tf.data.Dataset` of single `(x, y)`
            examples (not batches: `.unbatch()` a batched one) of known size.
            All tasks share one backbone, so their inputs have one structure.
        batch_size: examples per batch. Defaults to 32.
        sampling: `"proportional"` (default), `"uniform"` or `"temperature"`.
        temperature: the temperature `T > 0` of `"temperature"` sampling.
            Defaults to 2.0.
        seed: the seed of every random choice. Defaults to `None`: drawn from
            NumPy's global generator (so `keras.utils.set_random_seed` fixes it).

    Returns:
        A `tf.data.Dataset` of tagged batches, `len()` batches per epoch.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> stream = kt.task_batches(
    ...     {"movies": (np.zeros((100, 4)), np.zeros(100)),
    ...      "tweets": (np.ones((30, 4)), np.ones(30))},
    ...     batch_size=16, seed=0,
    ... )
    >>> len(stream)  # ceil(100 / 16) + ceil(30 / 16)
    9
    >>> stream.task_stream.batches_per_task
    {'movies': 7, 'tweets': 2}
    >>> (x, y), = stream.take(1).as_numpy_iterator()
    >>> sorted(x), sorted(y), x["inputs"].shape
    (['inputs', 'task'], ['movies', 'tweets'], (16, 4))
    """
    import tensorflow as tf

    _check_tasks(data)
    batch_size = check_integer(batch_size, "batch_size", "examples per batch", low=1)
    temperature = check_sampling(sampling, temperature)
    seed = _check_seed(seed)
    tasks = tuple(sorted(data))
    sources = [_task_source(tf, task, data[task]) for task in tasks]
    _check_same_inputs(tasks, sources)
    sizes = {task: source.size for task, source in zip(tasks, sources)}
    counts = batches_per_task(sizes, batch_size, sampling, temperature)
    label_specs = [source.dataset.element_spec[1] for source in sources]
    taggers = [_tagger(tf, index, tasks, label_specs) for index in range(len(tasks))]
    next_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="task_batches_epoch")

    def epoch_batches(epoch):
        # The graph-level seed of this traced function: shuffles then depend
        # on `seed` alone, not on TensorFlow's global seed (whose value 0
        # would also break shuffles seeded by a tensor, as these are).
        tf.compat.v1.set_random_seed(seed % (2**31 - 1) + 1)
        streams = []
        for index, (task, source) in enumerate(zip(tasks, sources)):
            task_seed = _task_seed(seed, index)
            if sampling == "proportional":
                batches = source.shuffled(tf, task_seed + epoch * _EPOCH_STRIDE).batch(batch_size)
            else:
                batches = source.cycled(tf, task_seed + epoch * _EPOCH_STRIDE)
                batches = batches.batch(batch_size, drop_remainder=True).take(counts[task])
            streams.append(batches.map(taggers[index]))
        order = np.repeat(np.arange(len(tasks), dtype="int64"), [counts[t] for t in tasks])
        order = tf.random.experimental.stateless_shuffle(
            tf.constant(order), seed=tf.stack([tf.constant(seed, tf.int64), epoch])
        )
        choices = tf.data.Dataset.from_tensor_slices(order)
        return tf.data.Dataset.choose_from_datasets(streams, choices, stop_on_empty_dataset=True)

    # Each pass over the stream reads the epoch it produces, then moves it on.
    stream = tf.data.Dataset.range(1).map(lambda _: next_epoch.assign_add(1) - 1)
    stream = stream.flat_map(epoch_batches)
    stream = stream.apply(tf.data.experimental.assert_cardinality(sum(counts.values())))
    stream = stream.prefetch(tf.data.AUTOTUNE)
    stream.task_stream = TaskStream(
        tasks=tasks,
        sizes=sizes,
        batches_per_task=counts,
        probabilities=task_probabilities(sizes, sampling, temperature),
        sampling=sampling,
        seed=seed,
        _next_epoch=next_epoch,
    )
    return stream


@dataclasses.dataclass(frozen=True)
class TaskStream:
    """What a `kt.task_batches` stream holds (its `task_stream` attribute).

    Attributes:
        tasks: the task names, sorted: a batch's tag is an index into them.
        sizes: examples per task.
        batches_per_task: batches of each task in one epoch.
        probabilities: the sampling probability of each task.
        sampling: the sampling rule.
        seed: the seed every epoch derives from.
    """

    tasks: tuple
    sizes: dict
    batches_per_task: dict
    probabilities: dict
    sampling: str
    seed: int
    _next_epoch: object = dataclasses.field(repr=False)

    def set_epoch(self, epoch: int) -> None:
        """Makes the next pass over the stream produce epoch `epoch`."""
        self._next_epoch.assign(check_integer(epoch, "epoch", low=0))


def stream_epoch_callback(x) -> keras.callbacks.Callback | None:
    """A callback that keeps a `task_batches` stream at `fit`'s epoch, or None.

    `kt.MultiTaskModel.fit` adds it when `x` is such a stream, so that a run
    resumed at epoch `e` (`initial_epoch`, `kt.SafeBackupAndRestore`) draws
    epoch `e`'s batches, as the uninterrupted run did.
    """
    stream = getattr(x, "task_stream", None)
    return _EpochSync(stream) if isinstance(stream, TaskStream) else None


class _EpochSync(keras.callbacks.Callback):
    def __init__(self, stream: TaskStream):
        super().__init__()
        self.stream = stream

    def on_epoch_begin(self, epoch, logs=None):
        # Keras makes the epoch's iterator after `on_epoch_begin`.
        self.stream.set_epoch(epoch)


@dataclasses.dataclass
class _Source:
    """One task's examples as a dataset, with its size and shuffle buffer."""

    dataset: object
    size: int
    buffer: int

    def shuffled(self, tf, seed):
        return self.dataset.shuffle(self.buffer, seed=seed, reshuffle_each_iteration=False)

    def cycled(self, tf, seed):
        """Reshuffled passes, one after the other, without end."""
        return tf.data.Dataset.counter().flat_map(
            lambda index: self.shuffled(tf, seed + index * _PASS_STRIDE)
        )


def _check_tasks(data) -> None:
    if not isinstance(data, dict) or not data:
        raise TypeError(
            "`data` must be a non-empty dict mapping each task name to its data, e.g. "
            "{'movies': (x_movies, y_movies), 'tweets': tweets_dataset}; got "
            f"{type(data).__name__}."
        )
    for task in data:
        if not isinstance(task, str) or not task:
            raise TypeError(f"Task names must be non-empty strings, got {task!r}.")


def _check_seed(seed) -> int:
    if seed is None:
        return int(np.random.randint(0, 2**31 - 1))
    return check_integer(seed, "seed", "the seed of every random choice", low=0)


def _task_seed(seed: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0] >> 1)


def _task_source(tf, task: str, value) -> _Source:
    if value is None:
        raise ValueError(_no_data(task, "None"))
    if isinstance(value, tf.data.Dataset):
        dataset, size = value, _dataset_size(tf, task, value)
        buffer = min(size, _MAX_SHUFFLE_BUFFER)
    else:
        dataset, size = _array_dataset(tf, task, value)
        buffer = size
    dataset = dataset.map(lambda x, y: (_cast_floats(tf, x), _cast_floats(tf, y)))
    return _Source(dataset, size, buffer)


def _dataset_size(tf, task: str, dataset) -> int:
    spec = dataset.element_spec
    if not (isinstance(spec, tuple) and len(spec) == 2):
        raise ValueError(
            f"The dataset of task '{task}' must yield single `(x, y)` examples; its "
            f"elements are {spec}. Map it to `(inputs, labels)` pairs."
        )
    cardinality = int(dataset.cardinality())
    if cardinality == 0:
        raise ValueError(_no_data(task, "an empty dataset"))
    if cardinality < 0:
        kind = "infinite" if cardinality == tf.data.INFINITE_CARDINALITY else "of unknown size"
        raise ValueError(
            f"The dataset of task '{task}' is {kind}; task_batches needs each task's "
            "size to share out an epoch. Pass a finite dataset whose size tf.data "
            "knows, e.g. `dataset.apply(tf.data.experimental.assert_cardinality(n))` "
            "(and no `.repeat()`: the stream repeats a task as its share needs)."
        )
    return cardinality


def _array_dataset(tf, task: str, value):
    if not (isinstance(value, (tuple, list)) and len(value) == 2):
        raise TypeError(
            f"The data of task '{task}' must be `(x, y)` (arrays, or a dict of arrays "
            f"as x) or a tf.data.Dataset of `(x, y)` examples; got {type(value).__name__}."
        )
    x, y = (keras.tree.map_structure(np.asarray, part) for part in value)
    sizes = {len(leaf) if leaf.ndim else -1 for leaf in keras.tree.flatten((x, y))}
    if not sizes or -1 in sizes or len(sizes) != 1:
        raise ValueError(
            f"The inputs and labels of task '{task}' must be arrays with one row per "
            f"example, all of one length; got lengths {sorted(sizes)}."
        )
    size = sizes.pop()
    if size == 0:
        raise ValueError(_no_data(task, "arrays of 0 examples"))
    return tf.data.Dataset.from_tensor_slices((x, y)), size


def _no_data(task: str, what: str) -> str:
    return (
        f"Task '{task}' has no data ({what}). Give it examples, or leave it out of "
        "the dict: the model's other heads train without it."
    )


def _check_same_inputs(tasks, sources) -> None:
    first_task, first = tasks[0], sources[0].dataset.element_spec[0]
    for task, source in zip(tasks[1:], sources[1:]):
        spec = source.dataset.element_spec[0]
        same = _same_structure(first, spec) and all(
            a.dtype == b.dtype and a.shape.is_compatible_with(b.shape)
            for a, b in zip(keras.tree.flatten(first), keras.tree.flatten(spec))
        )
        if not same:
            raise ValueError(
                f"Tasks '{first_task}' and '{task}' have different inputs: {first} vs "
                f"{spec}. Every task goes through one backbone: give them inputs of one "
                "structure, dtype and shape (e.g. one tokenizer and sequence length)."
            )


def _same_structure(a, b) -> bool:
    try:
        keras.tree.assert_same_structure(a, b)
    except (ValueError, TypeError):
        return False
    return True


def _tagger(tf, index: int, tasks, label_specs):
    """The map from task `tasks[index]`'s `(x, y)` batch to a tagged stream batch."""

    def tag(x, y):
        count = tf.shape(keras.tree.flatten(x)[0])[0]
        labels = {
            task: y if other == index else _zeros(tf, spec, count)
            for other, (task, spec) in enumerate(zip(tasks, label_specs))
        }
        return {INPUTS: x, TASK: tf.fill([count], tf.constant(index, tf.int32))}, labels

    return tag


def _zeros(tf, spec, count):
    return keras.tree.map_structure(
        lambda leaf: tf.zeros([count] + [dim or 0 for dim in leaf.shape], leaf.dtype), spec
    )


def _cast_floats(tf, structure):
    floatx = keras.config.floatx()
    return keras.tree.map_structure(
        lambda x: tf.cast(x, floatx) if x.dtype.is_floating else x, structure
    )
