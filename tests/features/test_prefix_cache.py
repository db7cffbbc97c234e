import math
import os
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from testing_utils import dense_model, regression_data, values

import keras_transfer as kt
from keras_transfer.features._cached_batches import CachedBatches
from keras_transfer.features._graph_cut import CutUnsupported
from keras_transfer.features._sink import CacheTooLarge, MismatchedBatches, Sink
from keras_transfer.features.prefix_cache import PrefixCache


def stack(dropout=0.5, noise=False):
    """a -> dropout -> b -> c -> head: four groups, the dropout always before
    a frozen layer in the schedules below."""
    keras.utils.set_random_seed(1)
    layers = [keras.Input((6,), name="x")]
    if noise:
        layers.append(keras.layers.GaussianNoise(0.1, name="noise"))
    layers += [
        keras.layers.Dense(8, activation="tanh", name="a"),
        keras.layers.Dropout(dropout, name="drop"),
        keras.layers.Dense(8, activation="tanh", name="b"),
        keras.layers.Dense(8, activation="tanh", name="c"),
        keras.layers.Dense(1, name="head"),
    ]
    return keras.Sequential(layers, name="stack")


def compiled(model, optimizer=None):
    model.compile(optimizer or keras.optimizers.Adam(0.02), "mse", metrics=["mae"])
    return model


def same_start(model, reference):
    reference.set_weights(model.get_weights())
    return model, reference


class Snapshots(keras.callbacks.Callback):
    """Every weight of the model at the end of every epoch."""

    def on_train_begin(self, logs=None):
        self.snapshots = []

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append(values(self.model.weights))


def train(model, schedule, cached, seed=5, **fit_kwargs):
    """Weights after each epoch and the history of a cached or plain run."""
    recorder = Snapshots()
    callbacks = [recorder, *fit_kwargs.pop("callbacks", [])]
    keras.utils.set_random_seed(seed)
    if cached:
        stages = kt.FreezeSchedule(model, schedule, cache_frozen=True, verbose=0)
        history = stages.fit(callbacks=callbacks, verbose=0, **fit_kwargs)
    else:
        stages = kt.FreezeSchedule(model, schedule, verbose=0)
        history = model.fit(callbacks=[stages, *callbacks], verbose=0, **fit_kwargs)
    return recorder.snapshots, history.history


def assert_same_runs(first, second, rtol=1e-5, atol=1e-6):
    (snapshots, history), (other_snapshots, other_history) = first, second
    assert len(snapshots) == len(other_snapshots)
    for epoch, (ours, theirs) in enumerate(zip(snapshots, other_snapshots)):
        for index, (a, b) in enumerate(zip(ours, theirs)):
            np.testing.assert_allclose(a, b, rtol=rtol, atol=atol, err_msg=f"{index} {epoch}")
    assert history.keys() == other_history.keys()
    for key in history:
        np.testing.assert_allclose(history[key], other_history[key], rtol=rtol, atol=atol)


def no_warnings():
    return warnings.catch_warnings(record=True)


def test_each_stage_equals_the_uncached_run_with_its_prefix_in_inference_mode():
    # Cached frozen layers run in inference mode, the dropout among them
    # off: the same as an uncached run whose dropout does nothing.
    x, y = regression_data(40)
    cached, reference = same_start(compiled(stack()), compiled(stack(dropout=0.0)))
    data = dict(x=x, y=y, epochs=3, batch_size=8, validation_data=(x[:12], y[:12]))
    with no_warnings() as caught:
        ours = train(cached, {0: 1, 1: 2}, cached=True, **data)
    assert not [w for w in caught if "FreezeSchedule" in str(w.message)]
    assert_same_runs(ours, train(reference, {0: 1, 1: 2}, cached=False, **data))
    assert ours[1]["trainable_params"] == [9.0, 81.0, 81.0]


def test_an_uncached_run_with_active_dropout_differs():
    # The comparison above can fail: dropout in the frozen layers changes
    # an uncached run.
    x, y = regression_data(40)
    cached, reference = same_start(compiled(stack()), compiled(stack()))
    data = dict(x=x, y=y, epochs=1, batch_size=8)
    ours = train(cached, {0: 1, 1: 2}, cached=True, **data)
    theirs = train(reference, {0: 1, 1: 2}, cached=False, **data)
    assert not np.allclose(ours[0][-1][-2], theirs[0][-1][-2], atol=1e-4)  # the head's kernel


def test_batchnorm_in_the_prefix_and_a_last_stage_with_nothing_frozen():
    x, y = regression_data(40)
    cached, reference = same_start(
        compiled(dense_model(with_batchnorm=True)), compiled(dense_model(with_batchnorm=True))
    )
    data = dict(x=x, y=y, epochs=3, batch_size=8, shuffle=False)
    assert_same_runs(
        train(cached, {0: 1, 1: 2, 2: "all"}, cached=True, **data),
        train(reference, {0: 1, 1: 2, 2: "all"}, cached=False, **data),
    )


class CountCalls(keras.layers.Layer):
    calls = 0

    def call(self, inputs):
        CountCalls.calls += 1
        return inputs


def counting_model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, name="a")(CountCalls(name="count")(inputs))
    hidden = keras.layers.Dense(8, name="b")(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))
    model.compile("adam", "mse", run_eagerly=True)
    return model


def test_the_frozen_layers_run_once_per_stage_however_many_epochs():
    x, y = regression_data(32)
    counts = {}
    for cached, epochs in ((True, 1), (True, 4), (False, 4)):
        CountCalls.calls = 0
        data = dict(x=x, y=y, epochs=epochs, batch_size=8)
        train(counting_model(), {0: 1, 9: 2}, cached=cached, **data)
        counts[cached, epochs] = CountCalls.calls
    # One pass of four batches (plus the backend's traces), whatever the
    # number of epochs; uncached, every step of every epoch runs the prefix.
    assert counts[True, 1] == counts[True, 4] <= 4 + 4
    assert counts[False, 4] >= 4 * 4


def test_the_cut_falls_inside_a_kerashub_backbone_carrying_the_padding_mask():
    import keras_hub

    from keras_transfer.finetune import classifier

    def build():
        keras.utils.set_random_seed(2)
        backbone = keras_hub.models.BertBackbone(
            vocabulary_size=30,
            num_layers=2,
            num_heads=2,
            hidden_dim=8,
            intermediate_dim=16,
            max_sequence_length=10,
            dropout=0.0,
        )
        model = classifier.text_classifier(backbone, 10, num_classes=3, dropout=0.0)
        model.compile(keras.optimizers.Adam(0.01), "sparse_categorical_crossentropy")
        return model, classifier.groups_that_train(model)

    rng = np.random.default_rng(0)
    mask = np.arange(10) < rng.integers(3, 11, size=(24, 1))
    x = {
        "token_ids": np.where(mask, rng.integers(1, 30, size=(24, 10)), 0).astype("int32"),
        "segment_ids": np.zeros((24, 10), "int32"),
        "padding_mask": mask,
    }
    y = rng.integers(0, 3, size=24)
    (cached, plan), (reference, _) = build(), build()
    reference.set_weights(cached.get_weights())
    assert plan.names == ["token_embedding", "transformer_layer_0", "transformer_layer_1", "head"]
    kt.freeze(plan, 2)
    cache = PrefixCache(cached, plan, verbose=0)
    assert [tuple(t.shape) for t in cache.prefix.outputs] == [(None, 10, 8), (None, 10)]
    assert cache.prefix.outputs[1].dtype == "bool"
    assert "transformer_layer_0" in cache.frozen_layers
    data = dict(x=x, y=y, epochs=1, batch_size=8)
    schedule = {0: 2, 1: 3}
    ours = train(cached, schedule, cached=True, **data)
    theirs = train(reference, schedule, cached=False, **data)
    assert_same_runs(ours, theirs)


def test_discriminative_rates_and_a_shuffled_run():
    x, y = regression_data(40)
    runs = []
    for rate in (0.5, 0.0):
        model = stack(dropout=rate)
        plan = kt.layer_groups(model)
        optimizer = kt.DiscriminativeLR(keras.optimizers.Adam(0.02), plan, decay=2.0)
        runs.append(compiled(model, optimizer))
    same_start(*runs)
    data = dict(x=x, y=y, epochs=3, batch_size=8, shuffle=True)
    assert_same_runs(
        train(runs[0], {0: 1, 1: 2}, cached=True, **data),
        train(runs[1], {0: 1, 1: 2}, cached=False, **data),
    )


class StopAfter(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_resumed_run_rebuilds_the_cache_for_the_stage_it_resumes_in(tmp_path):
    x, y = regression_data(32)
    data = dict(x=x, y=y, epochs=3, batch_size=8, shuffle=False)
    uninterrupted = compiled(stack())
    first = compiled(stack())
    same_start(uninterrupted, first)
    expected = train(uninterrupted, {0: 1, 1: 2}, cached=True, **data)
    backup = kt.SafeBackupAndRestore(str(tmp_path / "backup"))
    with pytest.raises(KeyboardInterrupt):
        train(first, {0: 1, 1: 2}, cached=True, callbacks=[backup, StopAfter(1)], **data)
    assert backup.latest_epoch() == 2
    resumed = compiled(stack())
    resumed.set_weights([np.zeros_like(w) for w in resumed.get_weights()])
    # Resumed at epoch 2, in the middle of the second stage.
    snapshots, history = train(resumed, {0: 1, 1: 2}, cached=True, callbacks=[backup], **data)
    assert len(history["loss"]) == 1
    np.testing.assert_allclose(history["loss"], expected[1]["loss"][2:], rtol=1e-5)
    for a, b in zip(snapshots[-1], expected[0][-1]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_non_finite_guard_skips_a_bad_step_of_the_top():
    x, y = regression_data(32)
    x[13] = np.nan  # in the second batch
    runs = []
    for cached in (True, False):
        model = compiled(stack(dropout=0.0))
        guard = kt.NonFiniteGuard(on_nonfinite="skip", verbose=0)
        runs.append((model, guard, cached))
    same_start(runs[0][0], runs[1][0])
    results = [
        train(
            model,
            {0: 1, 1: 2},
            cached,
            x=x,
            y=y,
            epochs=2,
            batch_size=8,
            shuffle=False,
            callbacks=[guard],
        )
        for model, guard, cached in runs
    ]
    assert results[0][1]["skipped_steps"] == [1.0, 2.0]
    assert np.isfinite(results[0][1]["loss"]).all()
    assert_same_runs(*results)


def test_early_stopping_ends_the_whole_run():
    x, y = regression_data(32)
    stop = keras.callbacks.EarlyStopping(monitor="loss", min_delta=1e9, patience=0)
    _, history = train(
        compiled(stack()), {0: 1, 1: 2, 2: 3}, cached=True, x=x, y=y, epochs=5, callbacks=[stop]
    )
    assert len(history["loss"]) == 2


def test_a_dataset_is_cached_batch_by_batch_with_its_sample_weights():
    x, y = regression_data(36)
    weights = np.linspace(0.5, 1.5, 36).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, y, weights)).batch(8)
    validation = tf.data.Dataset.from_tensor_slices((x[:10], y[:10])).batch(4)
    cached, reference = same_start(compiled(stack()), compiled(stack(dropout=0.0)))
    data = dict(x=dataset, validation_data=validation, epochs=2)
    assert_same_runs(
        train(cached, {0: 1, 1: 2}, cached=True, **data),
        train(reference, {0: 1, 1: 2}, cached=False, **data),
    )


def endless(x, y):
    while True:
        yield x[:8], y[:8]


@pytest.mark.parametrize(
    "case, message",
    [
        ("generator", "cannot be read again"),
        ("noise", "random layers \\['noise'\\]"),
        ("steps", "unit='step'"),
        ("too large", "pass the memory limit"),
        ("random dataset", "draws random numbers"),
    ],
)
def test_where_a_cache_cannot_apply_it_says_why_and_trains_uncached(case, message, tmp_path):
    x, y = regression_data(32)
    model = compiled(stack(noise=case == "noise"))
    options, data = {}, dict(x=x, y=y, epochs=2, batch_size=8)
    if case == "generator":
        data = dict(x=endless(x, y), epochs=2, steps_per_epoch=2)
    elif case == "steps":
        options = dict(unit="step")
        data["steps_per_epoch"] = 4
    elif case == "too large":
        options = dict(cache_dir=str(tmp_path), cache_memory_limit_mb=0, cache_disk_limit_mb=0)
    elif case == "random dataset":
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
        data = dict(x=dataset.map(lambda a, b: (a + tf.random.normal(tf.shape(a)), b)), epochs=2)
    stages = kt.FreezeSchedule(model, {0: 1, 1: 2}, cache_frozen=True, verbose=0, **options)
    before = values(model.get_layer("c").weights)
    with pytest.warns(UserWarning, match=message) as caught:
        history = stages.fit(verbose=0, **data)
    assert all(str(w.message).count("\n") == 0 for w in caught)
    assert len(history.history["loss"]) == 2
    assert not np.allclose(values(model.get_layer("c").weights)[0], before[0])


def test_past_the_memory_limit_the_cache_goes_to_disk_and_is_deleted_after(tmp_path):
    class ListFiles(keras.callbacks.Callback):
        seen = []

        def on_epoch_end(self, epoch, logs=None):
            ListFiles.seen.append(sorted(os.listdir(tmp_path)))

    x, y = regression_data(32)
    on_disk, in_memory = same_start(compiled(stack()), compiled(stack()))
    data = dict(x=x, y=y, epochs=2, batch_size=8, validation_data=(x[:8], y[:8]), shuffle=False)
    stages = kt.FreezeSchedule(
        on_disk,
        {0: 1, 1: 2},
        cache_frozen=True,
        verbose=0,
        cache_dir=str(tmp_path),
        cache_memory_limit_mb=0,
    )
    keras.utils.set_random_seed(5)
    stages.fit(callbacks=[ListFiles()], verbose=0, **data)
    assert all(any(name.endswith(".bin") for name in names) for names in ListFiles.seen)
    assert not os.listdir(tmp_path)
    train(in_memory, {0: 1, 1: 2}, cached=True, **data)
    for a, b in zip(on_disk.get_weights(), in_memory.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_prefix_cache_trains_the_top_of_a_frozen_model_like_fit():
    x, y = regression_data(32)
    cached, reference = same_start(compiled(stack()), compiled(stack(dropout=0.0)))
    for model in (cached, reference):
        kt.freeze(model, trainable_groups=2)
    cache = PrefixCache(cached, verbose=0)
    assert cache.frozen_layers == ["a", "b"]
    assert [layer.name for layer in cache.top.layers[1:]] == ["c", "head"]
    keras.utils.set_random_seed(3)
    cache.fit(x, y, epochs=2, batch_size=8, verbose=0)
    keras.utils.set_random_seed(3)
    reference.fit(x, y, epochs=2, batch_size=8, verbose=0)
    for a, b in zip(cached.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_prefix_cache_refuses_what_it_cannot_cut():
    model = compiled(stack())
    with pytest.raises(CutUnsupported, match="no layer group of 'stack' is frozen"):
        PrefixCache(model)
    model.get_layer("b").trainable = False  # `a` trains, and feeds frozen `b`.
    with pytest.raises(ValueError, match=r"trainable layer\(s\) \['a'\] feed frozen layers"):
        PrefixCache(model)
    with pytest.raises(ValueError, match="call `model.compile"):
        PrefixCache(stack())


def test_a_keras_mask_crossing_the_cut_is_refused():
    inputs = keras.Input((5,), dtype="int32")
    embedded = keras.layers.Embedding(10, 4, mask_zero=True, name="embed")(inputs)
    pooled = keras.layers.GlobalAveragePooling1D()(keras.layers.Dense(4, name="mid")(embedded))
    model = compiled(keras.Model(inputs, keras.layers.Dense(1, name="head")(pooled)))
    kt.freeze(model, trainable_groups=2)
    with pytest.raises(CutUnsupported, match="Keras masks ride on"):
        PrefixCache(model)


def test_a_subclassed_model_is_refused():
    class Custom(keras.Model):
        def __init__(self):
            super().__init__()
            self.body = keras.layers.Dense(4, name="body")
            self.head = keras.layers.Dense(1, name="head")

        def call(self, x):
            return self.head(self.body(x))

    model = Custom()
    model(np.ones((1, 3)))
    compiled(model)
    kt.freeze(model, 1)
    with pytest.raises(CutUnsupported, match="not a plain Functional or Sequential"):
        PrefixCache(model)


def test_the_sink_moves_to_disk_past_its_memory_limit(tmp_path):
    sink = Sink(tmp_path, "t", memory_limit_bytes=100)
    for start in range(0, 40, 8):
        sink.add(features=[np.arange(start, start + 8, dtype="float32")[:, None]])
    assert sink.on_disk
    (features,) = sink.get("features")
    assert isinstance(features, np.memmap)
    np.testing.assert_array_equal(features[:, 0], np.arange(40))
    sink.delete()
    assert not list(tmp_path.iterdir())


def test_the_sink_gives_up_past_its_limits(tmp_path):
    memory_only = Sink(None, "t", memory_limit_bytes=10)
    with pytest.raises(CacheTooLarge, match="no folder was given"):
        memory_only.add(features=np.zeros((4, 4)))
    with pytest.raises(CacheTooLarge, match="disk limit"):
        Sink(tmp_path, "t", memory_limit_bytes=0, disk_limit_bytes=10).expect(math.inf)
    mixed = Sink(None, "t")
    mixed.add(features=np.zeros((2, 3)))
    with pytest.raises(MismatchedBatches, match="differ in shape"):
        mixed.add(features=np.zeros((2, 4)))


@pytest.mark.parametrize("shuffle", [True, "batch", False])
def test_cached_batches_cover_every_row_once_an_epoch(shuffle):
    x = np.arange(10)[:, None].astype("float32")
    batches = CachedBatches(x, {"y": x[:, 0] * 2}, None, batch_size=4, shuffle=shuffle)
    epochs = []
    for _ in range(2):
        rows = [batches[i] for i in range(len(batches))]
        assert [len(inputs) for inputs, _ in rows] == [4, 4, 2]
        for inputs, labels in rows:
            np.testing.assert_array_equal(labels["y"], inputs[:, 0] * 2)
        epochs.append(np.concatenate([inputs[:, 0] for inputs, _ in rows]))
        batches.on_epoch_end()
    for order in epochs:
        assert sorted(order) == list(range(10))
    if shuffle is False:
        np.testing.assert_array_equal(epochs[0], np.arange(10))
    elif shuffle == "batch":
        assert [sorted(order[:4]) for order in epochs] == [[0, 1, 2, 3]] * 2
