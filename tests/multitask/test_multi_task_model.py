import keras
import numpy as np
import pytest
from multitask.multitask_testing import (
    INPUT_DIM,
    LOSSES,
    PlainModels,
    backbone,
    model,
    numpy_of,
    tagged_batch,
    task_data,
    values,
)

from keras_transfer.multitask import MultiTaskModel, task_batches


def sgd():
    return keras.optimizers.SGD(0.1)


def assert_same_weights(actual, expected):
    for a, e in zip(values(actual), values(expected)):
        np.testing.assert_allclose(a, e, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("task", ["topics", "scores"])
def test_a_batch_of_one_task_is_an_sgd_step_of_that_task_plain_model(task):
    multi = model(optimizer=sgd(), loss=LOSSES)
    plain = PlainModels(multi, sgd)
    other = "scores" if task == "topics" else "topics"
    other_before = values(multi.heads[other].weights)
    data = task_data()
    multi.train_on_batch(*tagged_batch(task, data))
    plain.step(task, *data[task])
    assert_same_weights(multi.backbone.weights, plain.backbone.weights)
    assert_same_weights(multi.heads[task].weights, plain.head(task).weights)
    for after, before in zip(values(multi.heads[other].weights), other_before):
        np.testing.assert_array_equal(after, before)


def test_fit_on_a_stream_follows_the_per_task_reference_steps_batch_by_batch():
    multi = model(optimizer=sgd(), loss=LOSSES)
    plain = PlainModels(multi, sgd)
    stream = task_batches(task_data(), batch_size=8, seed=3)
    multi.fit(stream, epochs=1, verbose=0)
    stream.task_stream.set_epoch(0)
    tasks_seen = []
    for x, y in stream.as_numpy_iterator():
        task = stream.task_stream.tasks[x["task"][0]]
        tasks_seen.append(task)
        plain.step(task, x["inputs"], y[task])
    assert set(tasks_seen) == {"topics", "scores"}
    assert_same_weights(multi.backbone.weights, plain.backbone.weights)
    for task in ("topics", "scores"):
        assert_same_weights(multi.heads[task].weights, plain.head(task).weights)


def test_with_adam_weight_decay_and_batchnorm_other_heads_stay_exactly_fixed():
    scores_head = keras.Sequential(
        [keras.layers.Dense(4), keras.layers.BatchNormalization(), keras.layers.Dense(1)]
    )
    multi = MultiTaskModel(backbone(), {"topics": keras.layers.Dense(3), "scores": scores_head})
    multi.compile(optimizer=keras.optimizers.AdamW(0.05, weight_decay=0.1), loss=LOSSES)
    data = task_data()
    multi.train_on_batch(*tagged_batch("scores", data))  # Momentum for the scores head.
    scores_before = values(scores_head.weights)  # Batch-norm statistics included.
    topics_before, backbone_before = (
        values(multi.heads["topics"].weights),
        values(multi.backbone.weights),
    )
    multi.train_on_batch(*tagged_batch("topics", data))
    for after, before in zip(values(scores_head.weights), scores_before):
        np.testing.assert_array_equal(after, before)
    assert all(
        not np.allclose(after, before)
        for after, before in zip(values(multi.heads["topics"].weights), topics_before)
    )
    assert not np.allclose(values(multi.backbone.weights)[0], backbone_before[0])
    multi.train_on_batch(*tagged_batch("scores", data))
    assert not np.allclose(values(scores_head.weights)[0], scores_before[0])


def test_a_loss_that_is_nan_on_placeholder_labels_does_not_reach_the_gradients():
    def log_error(y_true, y_pred):  # Infinite on the zeros other tasks' batches carry.
        return keras.ops.mean(keras.ops.square(keras.ops.log(y_true) - y_pred))

    multi = model(optimizer=sgd(), loss={"topics": LOSSES["topics"], "scores": log_error})
    loss = multi.train_on_batch(*tagged_batch("topics", task_data()))
    assert np.isfinite(loss).all()
    assert all(np.isfinite(v).all() for v in values(multi.weights))


def test_logs_hold_each_task_loss_and_metrics_over_that_task_examples_only():
    multi = model(optimizer=sgd(), loss=LOSSES, metrics={"topics": ["accuracy"], "scores": ["mae"]})
    data = task_data(samples=(21, 10))  # Short last batches: a mean over examples.
    logs = multi.evaluate(task_batches(data, batch_size=8, seed=0), return_dict=True, verbose=0)
    assert sorted(logs) == ["loss", "scores_loss", "scores_mae", "topics_accuracy", "topics_loss"]
    x, y = data["topics"]
    logits = numpy_of(multi(x, task="topics")).astype("float64")
    log_probabilities = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(
        logs["topics_loss"], -log_probabilities[np.arange(len(y)), y].mean(), rtol=1e-5
    )
    np.testing.assert_allclose(logs["topics_accuracy"], (logits.argmax(1) == y).mean(), 1e-6)
    x, y = data["scores"]
    predictions = numpy_of(multi(x, task="scores"))
    np.testing.assert_allclose(logs["scores_loss"], ((predictions - y) ** 2).mean(), rtol=1e-5)
    np.testing.assert_allclose(logs["scores_mae"], np.abs(predictions - y).mean(), rtol=1e-5)


def test_a_stream_of_some_tasks_logs_those_tasks():
    multi = model(optimizer=sgd(), loss=LOSSES, metrics=["mae"])
    data = {"scores": task_data()["scores"]}
    logs = multi.evaluate(task_batches(data, batch_size=4, seed=0), return_dict=True, verbose=0)
    assert sorted(logs) == ["loss", "scores_loss", "scores_mae"]


def test_loss_weights_scale_each_task_loss():
    data = task_data()
    weighted = model(optimizer=sgd(), loss=LOSSES, loss_weights={"scores": 0.25})
    x, y = tagged_batch("scores", data)
    total = numpy_of(weighted.compute_loss(x, y, weighted(x), training=False))
    predictions = numpy_of(weighted(data["scores"][0], task="scores"))
    np.testing.assert_allclose(total, 0.25 * ((predictions - data["scores"][1]) ** 2).mean(), 1e-5)


def test_call_gives_one_head_or_every_head():
    multi = model()
    x = np.ones((2, INPUT_DIM), "float32")
    outputs = multi(x)
    assert sorted(outputs) == ["scores", "topics"]
    assert tuple(outputs["topics"].shape) == (2, 3)
    np.testing.assert_allclose(numpy_of(multi(x, task="scores")), numpy_of(outputs["scores"]))
    tagged, _ = tagged_batch("scores", task_data())
    assert sorted(multi(tagged)) == ["scores", "topics"]
    with pytest.raises(ValueError, match="Unknown task 'news'"):
        multi(x, task="news")


def test_compile_refuses_tasks_without_heads_and_heads_without_losses():
    multi = model()
    with pytest.raises(ValueError, match=r"`loss` names tasks \['news'\].*no head"):
        multi.compile(loss={**LOSSES, "news": "mse"})
    with pytest.raises(ValueError, match=r"No loss for tasks \['scores'\]"):
        multi.compile(loss={"topics": LOSSES["topics"]})
    with pytest.raises(ValueError, match="a loss per task"):
        multi.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"`metrics` names tasks \['news'\]"):
        multi.compile(loss=LOSSES, metrics={"news": ["accuracy"]})
    with pytest.raises(ValueError, match=r"`loss_weights` names tasks \['news'\]"):
        multi.compile(loss=LOSSES, loss_weights={"news": 1.0})
    with pytest.raises(ValueError, match=r"loss_weights\['topics'\]"):
        multi.compile(loss=LOSSES, loss_weights={"topics": -1.0})
    with pytest.raises(ValueError, match="weighs its metrics by task"):
        multi.compile(loss=LOSSES, weighted_metrics=["mae"])


def test_training_on_untagged_data_says_to_build_a_stream():
    multi = model(optimizer=sgd(), loss=LOSSES)
    x, y = task_data()["scores"]
    with pytest.raises(ValueError, match="kt.task_batches"):
        multi.fit(x, y, verbose=0)


def test_a_stream_with_a_task_the_model_lacks_names_it():
    multi = model(optimizer=sgd(), loss=LOSSES)
    data = {**task_data(), "news": task_data()["topics"]}
    with pytest.raises(ValueError, match=r"tasks \['news'\] that the model has no head for"):
        multi.fit(task_batches(data, batch_size=8, seed=0), verbose=0)


def test_a_head_whose_output_does_not_fit_its_loss_is_named():
    multi = model(optimizer=sgd(), loss={**LOSSES, "topics": "binary_crossentropy"})
    with pytest.raises(ValueError, match=r"head of task 'topics' outputs shape \(.*3\)"):
        multi.fit(task_batches(task_data(), batch_size=8, seed=0), verbose=0)


def test_tags_outside_the_stream_tasks_are_refused_where_they_are_values():
    multi = model(optimizer=sgd(), loss=LOSSES, run_eagerly=True)
    x, y = tagged_batch("scores", task_data())
    x["task"] = np.full_like(x["task"], 7)
    with pytest.raises(ValueError, match=r"task tags \[7\] are not one index"):
        multi.train_on_batch(x, y)
    x["task"][:3] = 0
    with pytest.raises(ValueError, match=r"task tags \[0, 7\]"):
        multi.fit(x, y, verbose=0)


def test_constructor_refuses_bad_heads_and_backbones():
    with pytest.raises(TypeError, match="non-empty dict"):
        MultiTaskModel(backbone(), [keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="identifiers"):
        MultiTaskModel(backbone(), {"movie reviews": keras.layers.Dense(2)})
    shared = keras.layers.Dense(2)
    with pytest.raises(ValueError, match="share one head"):
        MultiTaskModel(backbone(), {"a": shared, "b": shared})
    inputs = keras.Input((INPUT_DIM,))
    two_outputs = keras.Model(inputs, [keras.layers.Dense(2)(inputs), inputs])
    with pytest.raises(ValueError, match="one feature tensor"):
        MultiTaskModel(two_outputs, {"a": keras.layers.Dense(2)})


def test_task_model_is_backbone_and_head_sharing_their_weights():
    multi = model(optimizer=sgd(), loss=LOSSES)
    topics = multi.task_model("topics")
    x = task_data()["topics"][0]
    np.testing.assert_allclose(numpy_of(topics(x)), numpy_of(multi(x, task="topics")), 1e-6)
    multi.fit(task_batches(task_data(), batch_size=8, seed=0), verbose=0)
    np.testing.assert_allclose(numpy_of(topics(x)), numpy_of(multi(x, task="topics")), 1e-6)
    assert {id(v) for v in topics.weights} <= {id(v) for v in multi.weights}


def test_serving_model_runs_the_backbone_once_for_every_head():
    multi = model()
    serving = multi.serving_model()
    x = task_data()["topics"][0]
    outputs = serving(x)
    assert sorted(outputs) == ["scores", "topics"]
    np.testing.assert_allclose(numpy_of(outputs["scores"]), numpy_of(multi(x, task="scores")))
    assert sum(layer is multi.backbone for layer in serving.layers) == 1
    assert multi.serving_model("scores").output.shape == (None, 1)
    single = MultiTaskModel(backbone(), {"only": keras.layers.Dense(2)})
    assert single.serving_model().output.shape == (None, 2)


def test_keras_file_round_trip_in_safe_mode_keeps_weights_and_compile(tmp_path):
    multi = model(
        optimizer=keras.optimizers.Adam(0.01),
        loss=LOSSES,
        metrics={"topics": ["accuracy"]},
        loss_weights={"scores": 0.5},
    )
    stream = task_batches(task_data(), batch_size=8, seed=0)
    multi.fit(stream, epochs=1, verbose=0)
    path = tmp_path / "multi.keras"
    multi.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert isinstance(loaded, MultiTaskModel) and loaded.tasks == multi.tasks
    x = task_data()["topics"][0]
    for task in multi.tasks:
        np.testing.assert_allclose(
            numpy_of(loaded(x, task=task)), numpy_of(multi(x, task=task)), 1e-6
        )
    expected = multi.evaluate(stream, return_dict=True, verbose=0)
    assert loaded.evaluate(stream, return_dict=True, verbose=0) == pytest.approx(expected, 1e-5)
    for restored, saved in zip(
        values(loaded.optimizer.variables), values(multi.optimizer.variables)
    ):
        np.testing.assert_array_equal(restored, saved)


def test_config_round_trip_rebuilds_backbone_and_heads():
    multi = model()
    twin = MultiTaskModel.from_config(multi.get_config())
    assert twin.tasks == multi.tasks
    assert [w.shape for w in twin.weights] == [w.shape for w in multi.weights]
