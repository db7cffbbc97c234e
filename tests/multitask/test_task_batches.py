import collections

import numpy as np
import pytest
import tensorflow as tf

import keras_transfer as kt


def arrays(sizes, width=2):
    """Per task, inputs whose first column numbers the example (task k: 1000 k + i)."""
    data = {}
    for k, (task, size) in enumerate(sizes.items()):
        ids = 1000 * k + np.arange(size)
        x = np.stack([ids] + [np.zeros(size)] * (width - 1), axis=1).astype("float64")
        data[task] = (x, ids.astype("int64"))
    return data


def epoch(stream):
    """Each batch of one pass as (task, example ids, labels dict)."""
    tasks = stream.task_stream.tasks
    return [
        (tasks[x["task"][0]], x["inputs"][:, 0].astype(int).tolist(), y, x["task"])
        for x, y in stream.as_numpy_iterator()
    ]


def test_proportional_epoch_is_one_shuffled_pass_over_every_task():
    stream = kt.task_batches(arrays({"a": 30, "b": 7}), batch_size=4, seed=0)
    assert len(stream) == 8 + 2
    batches = epoch(stream)
    assert len(batches) == len(stream)
    seen = collections.defaultdict(list)
    for task, ids, _, _ in batches:
        seen[task].extend(ids)
    assert sorted(seen["a"]) == list(range(30))
    assert sorted(seen["b"]) == list(range(1000, 1007))
    assert seen["a"] != sorted(seen["a"])  # Shuffled.
    assert [task for task, *_ in batches] != sorted(task for task, *_ in batches)


def test_every_batch_is_one_task_tagged_with_its_labels_and_zeros_for_the_others():
    stream = kt.task_batches(arrays({"b": 9, "a": 5}), batch_size=4, seed=1)
    assert stream.task_stream.tasks == ("a", "b")
    for task, ids, labels, tags in epoch(stream):
        assert tags.dtype == np.int32 and set(tags.tolist()) == {("a", "b").index(task)}
        assert labels[task].tolist() == ids
        other = "b" if task == "a" else "a"
        assert labels[other].shape == (len(ids),) and not labels[other].any()
    x, _ = next(iter(stream))
    assert x["inputs"].dtype == tf.float32  # float64 arrays, cast to floatx.


@pytest.mark.parametrize(
    "sampling, expected", [("uniform", {"a": 8, "b": 8}), ("temperature", {"a": 10, "b": 6})]
)
def test_uniform_and_temperature_share_out_an_epoch_of_full_batches(sampling, expected):
    # 60 and 20 examples in batches of 5: an epoch of 12 + 4 batches.
    stream = kt.task_batches(arrays({"a": 60, "b": 20}), 5, sampling=sampling, seed=0)
    assert len(stream) == 16 and stream.task_stream.batches_per_task == expected
    batches = epoch(stream)
    counts = collections.Counter(task for task, *_ in batches)
    assert counts == expected
    assert all(len(ids) == 5 for _, ids, _, _ in batches)
    b_ids = [i for task, ids, _, _ in batches if task == "b" for i in ids]
    # b is up-sampled: a whole reshuffled pass over its 20 examples, then the next.
    first_pass, rest = b_ids[:20], b_ids[20:]
    assert sorted(first_pass) == list(range(1000, 1020))
    assert len(set(rest)) == len(rest) > 0 and rest != first_pass[: len(rest)]


def test_each_epoch_is_a_function_of_the_seed_and_its_index():
    data = arrays({"a": 12, "b": 6})
    stream = kt.task_batches(data, batch_size=3, sampling="temperature", seed=5)
    first, second = epoch(stream), epoch(stream)
    assert [ids for _, ids, *_ in first] != [ids for _, ids, *_ in second]
    twin = kt.task_batches(data, batch_size=3, sampling="temperature", seed=5)
    twin.task_stream.set_epoch(1)
    assert [ids for _, ids, *_ in epoch(twin)] == [ids for _, ids, *_ in second]
    other = kt.task_batches(data, batch_size=3, sampling="temperature", seed=6)
    assert [ids for _, ids, *_ in epoch(other)] != [ids for _, ids, *_ in first]


def test_tf_data_tasks_mix_like_arrays():
    (x_a, y_a), (x_b, y_b) = arrays({"a": 10, "b": 4}).values()
    data = {
        "a": tf.data.Dataset.from_tensor_slices(({"tokens": x_a}, y_a)),
        "b": tf.data.Dataset.from_tensor_slices(({"tokens": x_b}, y_b)),
    }
    stream = kt.task_batches(data, batch_size=4, seed=0)
    seen = collections.defaultdict(list)
    for x, y in stream.as_numpy_iterator():
        task = stream.task_stream.tasks[x["task"][0]]
        seen[task].extend(y[task].tolist())
    assert sorted(seen["a"]) == list(range(10)) and sorted(seen["b"]) == list(range(1000, 1004))


def test_probabilities_follow_the_sampling_rule():
    data = arrays({"a": 90, "b": 10})
    probabilities = {
        sampling: kt.task_batches(data, 10, sampling=sampling, seed=0).task_stream.probabilities
        for sampling in ("proportional", "uniform", "temperature")
    }
    assert probabilities["proportional"] == pytest.approx({"a": 0.9, "b": 0.1})
    assert probabilities["uniform"] == pytest.approx({"a": 0.5, "b": 0.5})
    assert probabilities["temperature"] == pytest.approx({"a": 0.75, "b": 0.25})


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan")])
def test_temperature_must_be_positive(temperature):
    with pytest.raises(ValueError, match="`temperature` must be a finite number > 0"):
        kt.task_batches(arrays({"a": 4}), 2, sampling="temperature", temperature=temperature)


def test_bad_arguments_say_what_to_pass():
    with pytest.raises(ValueError, match="`sampling` must be one of"):
        kt.task_batches(arrays({"a": 4}), 2, sampling="balanced")
    with pytest.raises(TypeError, match="non-empty dict"):
        kt.task_batches([arrays({"a": 4})["a"]], 2)
    with pytest.raises(ValueError, match="`batch_size` must be an integer >= 1"):
        kt.task_batches(arrays({"a": 4}), 0)
    with pytest.raises(TypeError, match=r"task 'a' must be `\(x, y\)`"):
        kt.task_batches({"a": np.zeros((4, 2))}, 2)


@pytest.mark.parametrize(
    "empty",
    [None, (np.zeros((0, 2)), np.zeros(0)), tf.data.Dataset.from_tensor_slices(([[0.0]], [0]))],
)
def test_a_task_without_data_is_named(empty):
    if isinstance(empty, tf.data.Dataset):
        empty = empty.take(0)
    with pytest.raises(ValueError, match="Task 'b' has no data"):
        kt.task_batches({"a": arrays({"a": 4})["a"], "b": empty}, 2)


def test_datasets_of_unknown_size_or_with_different_inputs_are_refused():
    x, y = arrays({"a": 4})["a"]
    unknown = tf.data.Dataset.from_tensor_slices((x, y)).filter(lambda x, y: True)
    with pytest.raises(ValueError, match="assert_cardinality"):
        kt.task_batches({"a": unknown}, 2)
    with pytest.raises(ValueError, match="Tasks 'a' and 'b' have different inputs"):
        kt.task_batches({"a": (x, y), "b": (np.zeros((4, 3)), y)}, 2)
