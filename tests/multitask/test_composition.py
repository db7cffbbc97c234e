"""The library's recipes on a MultiTaskModel: freezing, per-group rates,
cached features, resumable and guarded training, export."""

import keras
import numpy as np
import pytest
from multitask.multitask_testing import (
    LOSSES,
    PlainModels,
    model,
    tagged_batch,
    task_data,
    values,
)

import keras_transfer as kt
from keras_transfer.multitask import task_batches


def sgd():
    return keras.optimizers.SGD(0.1)


def twin_of(multi, **compile_kwargs):
    twin = model(**compile_kwargs)
    twin.set_weights(multi.get_weights())
    return twin


class EpochEndWeights(keras.callbacks.Callback):
    def __init__(self, layers):
        super().__init__()
        self.layers, self.snapshots = layers, []

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append([values(layer.weights) for layer in self.layers])


def changed(before, after):
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_layer_groups_put_every_head_in_the_top_group():
    multi = model()
    plan = kt.layer_groups(multi)
    assert plan.names == ["shared_a", "shared_b", "heads"]
    head_variables = {id(v) for head in multi.heads.values() for v in head.weights}
    assert {id(v) for v in plan[-1].variables} == head_variables


def test_freeze_schedule_trains_the_heads_first_then_the_backbone():
    multi = model(optimizer=sgd(), loss=LOSSES)
    backbone_before = values(multi.backbone.weights)
    heads_before = [values(head.weights) for head in multi.heads.values()]
    recorder = EpochEndWeights([multi.backbone, *multi.heads.values()])
    history = multi.fit(
        task_batches(task_data(), batch_size=8, seed=0),
        epochs=2,
        verbose=0,
        callbacks=[kt.FreezeSchedule(multi, {0: 1, 1: "all"}, verbose=0), recorder],
    )
    (backbone_0, *heads_0), (backbone_1, _, _) = recorder.snapshots
    assert not changed(backbone_before, backbone_0)
    assert all(changed(before, after) for before, after in zip(heads_before, heads_0))
    assert changed(backbone_0, backbone_1)
    assert history.history["trainable_params"][0] < history.history["trainable_params"][1]


def test_discriminative_lr_gives_every_head_the_full_rate():
    multi = model()
    optimizer = kt.DiscriminativeLR(keras.optimizers.Adam(1e-3), multi, decay=10)
    multi.compile(optimizer=optimizer, loss=LOSSES)
    multi.fit(task_batches(task_data(), batch_size=8, seed=0), verbose=0)
    for head in multi.heads.values():
        assert {optimizer.multiplier_for(v) for v in head.trainable_weights} == {1.0}
    shared_a, shared_b = multi.backbone.get_layer("shared_a"), multi.backbone.get_layer("shared_b")
    assert optimizer.multiplier_for(shared_b.kernel) == pytest.approx(0.1)
    assert optimizer.multiplier_for(shared_a.kernel) == pytest.approx(0.01)


def test_discriminative_lr_on_one_group_per_task_head_scales_each_step_exactly():
    multi = model()
    plain = PlainModels(multi, sgd)
    topics, scores = multi.heads["topics"], multi.heads["scores"]
    plan = kt.LayerGroupPlan(
        [
            kt.LayerGroup("backbone", [multi.backbone]),
            kt.LayerGroup("scores", [scores]),
            kt.LayerGroup("topics", [topics]),
        ],
        multi,
    )
    optimizer = kt.DiscriminativeLR(sgd(), plan, multipliers={0: 0.5, "scores_head": 0.25})
    multi.compile(optimizer=optimizer, loss=LOSSES)
    backbone_before = values(multi.backbone.weights)
    data = task_data()
    multi.train_on_batch(*tagged_batch("topics", data))
    plain.step("topics", *data["topics"])
    # SGD is linear in the rate: the backbone moves half as far as at the full rate.
    for after, before, full in zip(
        values(multi.backbone.weights), backbone_before, values(plain.backbone.weights)
    ):
        np.testing.assert_allclose(after, before + 0.5 * (full - before), rtol=1e-5, atol=1e-6)
    for after, full in zip(values(topics.weights), values(plain.head("topics").weights)):
        np.testing.assert_allclose(after, full, rtol=1e-5, atol=1e-6)
    assert {optimizer.multiplier_for(v) for v in scores.trainable_weights} == {0.25}


def test_heads_train_on_cached_features_as_on_a_frozen_backbone():
    multi = model(optimizer=sgd(), loss=LOSSES, metrics={"topics": ["accuracy"]})
    multi.backbone.trainable = False
    reference = twin_of(multi, optimizer=sgd(), loss=LOSSES)
    reference.backbone.trainable = False
    data = task_data()
    cached = multi.cache_features(data, batch_size=8)
    features, labels = cached["topics"]
    assert features.shape == (16, 5) and np.array_equal(labels, data["topics"][1])
    heads = multi.heads_model()
    history = heads.fit(task_batches(cached, batch_size=8, seed=0), epochs=2, verbose=0)
    assert "topics_accuracy" in history.history
    reference.fit(task_batches(data, batch_size=8, seed=0), epochs=2, verbose=0)
    for task in multi.tasks:
        for trained, expected in zip(
            values(multi.heads[task].weights), values(reference.heads[task].weights)
        ):
            np.testing.assert_allclose(trained, expected, rtol=1e-5, atol=1e-6)


def test_cache_features_refuses_a_backbone_that_trains():
    multi = model(optimizer=sgd(), loss=LOSSES)
    with pytest.raises(ValueError, match="Freeze it first"):
        multi.cache_features(task_data())


class StopAfterEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise RuntimeError("preempted")


def test_a_run_resumed_by_safe_backup_and_restore_ends_where_an_uninterrupted_one_does(tmp_path):
    initial = model().get_weights()

    def run(callbacks, epochs=3):
        multi = model(optimizer=keras.optimizers.Adam(0.02), loss=LOSSES)
        multi.set_weights(initial)
        stream = task_batches(task_data(), 4, sampling="temperature", seed=7)
        multi.fit(stream, epochs=epochs, verbose=0, callbacks=callbacks)
        return multi

    uninterrupted = run([])
    backup = kt.SafeBackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(RuntimeError, match="preempted"):
        run([backup, StopAfterEpoch(1)])
    assert backup.latest_epoch() == 2
    resumed = run([kt.SafeBackupAndRestore(str(tmp_path / "backup"))])
    for actual, expected in zip(values(resumed.weights), values(uninterrupted.weights)):
        np.testing.assert_allclose(actual, expected, rtol=1e-6, atol=1e-7)


def test_non_finite_guard_skips_a_bad_batch_of_one_task():
    multi = model(optimizer=sgd(), loss=LOSSES)
    data = task_data()
    x_scores, y_scores = data["scores"]
    x_scores = x_scores.copy()
    x_scores[0, 0] = np.nan
    data["scores"] = (x_scores, y_scores)
    topics_before = values(multi.heads["topics"].weights)
    guard = kt.NonFiniteGuard(on_nonfinite="skip", verbose=0)
    history = multi.fit(
        task_batches(data, batch_size=8, seed=0), epochs=1, verbose=0, callbacks=[guard]
    )
    assert history.history["skipped_steps"] == [1.0]
    assert all(np.isfinite(v).all() for v in values(multi.weights))
    assert changed(topics_before, values(multi.heads["topics"].weights))


@pytest.mark.skipif(keras.backend.backend() == "torch", reason="SavedModel export: TF or JAX")
def test_a_task_model_exports_as_a_served_classifier(tmp_path):
    import tensorflow as tf

    multi = model()
    path = kt.export_saved_model(
        multi.task_model("topics"), str(tmp_path / "topics"), outputs="logits"
    )
    served = tf.saved_model.load(path)
    x = task_data()["topics"][0]
    result = served.serving_default(inputs=tf.constant(x))
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(multi(x, task="topics")))
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, rtol=1e-5, atol=1e-6)
