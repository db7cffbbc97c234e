"""DomainAdaptationModel with FreezeSchedule, DiscriminativeLR and the ramp."""

import keras
import numpy as np
from adaptation.adaptation_utils import domain_data, layers, pair_inputs, snapshot, task_loss
from keras import ops

from keras_transfer.adaptation import DomainAdaptationModel, DomainAdaptationSchedule
from keras_transfer.freezing import FreezeSchedule
from keras_transfer.groups import layer_groups
from keras_transfer.optimizers import DiscriminativeLR


def init(seed):
    return keras.initializers.GlorotUniform(seed=seed)


def two_layer_model(seed=0):
    _, task, domain = layers(seed)
    extractor = keras.Sequential(
        [
            keras.layers.Dense(4, activation="tanh", kernel_initializer=init(10), name="f1"),
            keras.layers.Dense(4, activation="tanh", kernel_initializer=init(11), name="f2"),
        ],
        name="features",
    )
    model = DomainAdaptationModel(extractor, task, domain)
    x_source, _, x_target = domain_data()
    model(pair_inputs(x_source[:2], x_target[:2]))
    return model


class Snapshots(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.taken = [self._take()]

    def on_epoch_end(self, epoch, logs=None):
        self.taken.append(self._take())

    def _take(self):
        model = self.model
        return {
            "features": snapshot(model.feature_extractor),
            "task": snapshot(model.task_head),
            "domain": snapshot(model.domain_head),
        }


def moved(before, after):
    return any(np.abs(a - b).max() > 0 for a, b in zip(before, after))


def fit(model, epochs, callbacks):
    x_source, y_source, x_target = domain_data()
    model.fit(
        pair_inputs(x_source, x_target),
        y_source,
        batch_size=len(x_source),
        epochs=epochs,
        shuffle=False,
        verbose=0,
        callbacks=callbacks,
    )


def test_heads_form_the_top_layer_group():
    model = two_layer_model()
    groups = layer_groups(model)
    assert [group.name for group in groups] == ["f1", "f2", "heads"]
    heads = {id(v) for v in groups[-1].variables}
    assert {id(v) for v in model.task_head.weights + model.domain_head.weights} == heads


def test_discriminative_rates_scale_feature_updates_not_heads():
    moves = {}
    for discriminative in (False, True):
        keras.backend.clear_session()
        model = two_layer_model()
        optimizer = keras.optimizers.SGD(0.1)
        if discriminative:
            optimizer = DiscriminativeLR(optimizer, model, decay=10)
        model.compile(optimizer=optimizer, loss=task_loss())
        recorder = Snapshots()
        fit(model, 1, [recorder])
        before, after = recorder.taken
        moves[discriminative] = {
            part: [a - b for a, b in zip(after[part], before[part])] for part in before
        }
    f1, f2 = model.feature_extractor.layers
    assert optimizer.multiplier_for(f1.kernel) == 0.01
    assert optimizer.multiplier_for(f2.kernel) == 0.1
    assert optimizer.multiplier_for(model.task_head.kernel) == 1.0
    assert optimizer.multiplier_for(model.domain_head.layers[0].kernel) == 1.0
    plain, scaled = moves[False], moves[True]
    for part, factors in (
        ("features", [0.01, 0.01, 0.1, 0.1]),
        ("task", [1, 1]),
        ("domain", [1] * 4),
    ):
        for a, b, factor in zip(scaled[part], plain[part], factors):
            np.testing.assert_allclose(a, factor * b, rtol=1e-4, atol=1e-7)


def test_gradual_unfreezing_trains_both_heads_first():
    model = two_layer_model()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss=task_loss())
    recorder = Snapshots()
    schedule = FreezeSchedule(model, {0: 1, 1: 2, 2: "all"}, verbose=0)
    fit(model, 3, [schedule, recorder])
    epoch_0, epoch_1, epoch_2 = zip(recorder.taken, recorder.taken[1:])
    assert moved(*[s["task"] for s in epoch_0]) and moved(*[s["domain"] for s in epoch_0])
    assert not moved(*[s["features"] for s in epoch_0])
    f2_only = [s["features"][2:] for s in epoch_1]
    f1_only = [s["features"][:2] for s in epoch_1]
    assert moved(*f2_only) and not moved(*f1_only)
    assert moved(*[s["features"][:2] for s in epoch_2])


def test_everything_together():
    model = two_layer_model()
    optimizer = DiscriminativeLR(keras.optimizers.Adam(1e-2), model)
    model.compile(optimizer=optimizer, loss=task_loss(), metrics=["accuracy"])
    callbacks = [
        FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0),
        DomainAdaptationSchedule(),
    ]
    x_source, y_source, x_target = domain_data(n_source=16, n_target=16)
    history = model.fit(
        pair_inputs(x_source, x_target),
        y_source,
        batch_size=8,
        epochs=2,
        verbose=0,
        callbacks=callbacks,
    )
    assert history.history["trainable_params"] == [
        float(sum(int(np.prod(v.shape)) for v in model.heads.weights)),
        float(sum(int(np.prod(v.shape)) for v in model.trainable_weights)),
    ]
    assert 0 < history.history["adaptation_weight"][0] < history.history["adaptation_weight"][1]
    assert np.all(np.isfinite(history.history["loss"]))
    assert float(ops.convert_to_numpy(model.adaptation_scale)) > 0.9
