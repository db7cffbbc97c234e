import os

import keras
import numpy as np
import pytest
from adaptation.adaptation_utils import (
    adaptation_model,
    domain_data,
    layers,
    one_step,
    pair_inputs,
    snapshot,
    task_loss,
)
from keras import ops

from keras_transfer.adaptation import (
    CoralLoss,
    DomainAdaptationModel,
    DomainConfusionLoss,
    MMDLoss,
    domain_pairs,
)
from keras_transfer.groups import layer_groups

LR = 0.1


def reference_step(inner_layers, initial, x, y, loss):
    """One full-batch SGD step of `Sequential(inner_layers)`; the weight moves."""
    model = keras.Sequential([keras.Input((x.shape[1],)), *inner_layers])
    for layer, weights in zip(inner_layers, initial):
        layer.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(LR), loss=loss)
    before = [snapshot(layer) for layer in inner_layers]
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    return [
        [after - old for after, old in zip(snapshot(layer), olds)]
        for layer, olds in zip(inner_layers, before)
    ]


def built(model, x_source, x_target):
    model(pair_inputs(x_source[:2], x_target[:2]))
    return model


def weight_moves(model, x_source, y_source, x_target):
    parts = [model.feature_extractor, model.task_head]
    parts += [model.domain_head] if model.domain_head is not None else []
    before = [snapshot(part) for part in parts]
    one_step(model, x_source, y_source, x_target)
    return before, [
        [after - old for after, old in zip(snapshot(part), olds)]
        for part, olds in zip(parts, before)
    ]


def domain_labels(x_source, x_target):
    return np.concatenate([np.zeros(len(x_source)), np.ones(len(x_target))]).astype("float32")


def confusion_objective(y_true, y_pred):
    return DomainConfusionLoss().confusion(y_pred)


def assert_moves_close(actual, expected):
    for a, e in zip(actual, expected):
        np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-6)


def test_adversarial_step_reverses_the_domain_gradient_into_the_features():
    """DANN's update: head and task as usual, features get task - w * domain."""
    weight = 0.7
    x_source, y_source, x_target = domain_data()
    model = built(adaptation_model(adaptation_weight=weight, lr=LR), x_source, x_target)
    (f0, t0, d0), (df, dt, dd) = weight_moves(model, x_source, y_source, x_target)
    f, t, _ = layers(seed=5)
    task_f, task_t = reference_step([f, t], [f0, t0], x_source, y_source, task_loss())
    f, _, d = layers(seed=6)
    joint = np.concatenate([x_source, x_target])
    dom_f, dom_d = reference_step(
        [f, d],
        [f0, d0],
        joint,
        domain_labels(x_source, x_target),
        keras.losses.BinaryCrossentropy(from_logits=True),
    )
    assert_moves_close(dd, dom_d)
    assert_moves_close(dt, task_t)
    assert_moves_close(df, [a - weight * b for a, b in zip(task_f, dom_f)])
    assert np.abs(dom_f[0]).max() > 1e-4  # the domain term is really there


def test_confusion_step_trains_head_on_its_loss_and_features_on_confusion():
    weight = 0.5
    x_source, y_source, x_target = domain_data(seed=1)
    model = built(
        adaptation_model(DomainConfusionLoss("confusion"), adaptation_weight=weight, lr=LR),
        x_source,
        x_target,
    )
    (f0, t0, d0), (df, dt, dd) = weight_moves(model, x_source, y_source, x_target)
    f, t, _ = layers(seed=5)
    task_f, task_t = reference_step([f, t], [f0, t0], x_source, y_source, task_loss())
    joint = np.concatenate([x_source, x_target])
    labels = domain_labels(x_source, x_target)
    f, _, d = layers(seed=6)
    _, dom_d = reference_step(
        [f, d], [f0, d0], joint, labels, keras.losses.BinaryCrossentropy(from_logits=True)
    )
    f, _, d = layers(seed=7)
    d.trainable = False
    conf_f, _ = reference_step([f, d], [f0, d0], joint, labels, confusion_objective)
    assert_moves_close(dd, dom_d)
    assert_moves_close(dt, task_t)
    assert_moves_close(df, [a + weight * b for a, b in zip(task_f, conf_f)])
    assert np.abs(conf_f[0]).max() > 1e-4


def coral_reference(source, target):
    dim = source.shape[1]
    difference = np.cov(source, rowvar=False) - np.cov(target, rowvar=False)
    return (difference**2).sum() / (4 * dim * dim)


def test_discrepancy_step_adds_weighted_discrepancy_gradient():
    x_source, y_source, x_target = domain_data(seed=2)
    moves = {}
    for weight in (0.0, 1.0):
        keras.backend.clear_session()
        model = adaptation_model(CoralLoss(), weight, with_domain_head=False, lr=LR)
        model = built(model, x_source, x_target)
        (f0, _), (df, _) = weight_moves(model, x_source, y_source, x_target)
        moves[weight] = df
    # The difference is the CORAL step alone: applied to the initial
    # features, it brings their covariances closer.
    extractor = model.feature_extractor
    extractor.set_weights(f0)
    before = coral_reference(*(ops.convert_to_numpy(extractor(x)) for x in (x_source, x_target)))
    extractor.set_weights([w + a - b for w, a, b in zip(f0, moves[1.0], moves[0.0])])
    after = coral_reference(*(ops.convert_to_numpy(extractor(x)) for x in (x_source, x_target)))
    assert after < before


def test_logs_and_evaluate_on_pairs_match_references():
    x_source, y_source, x_target = domain_data(seed=3)
    model = built(adaptation_model(), x_source, x_target)
    logs = model.evaluate(
        pair_inputs(x_source, x_target),
        y_source,
        batch_size=len(x_source),
        verbose=0,
        return_dict=True,
    )
    features = ops.convert_to_numpy(model.feature_extractor(np.concatenate([x_source, x_target])))
    logits = ops.convert_to_numpy(model.domain_head(features))[:, 0]
    labels = domain_labels(x_source, x_target)
    p = 1 / (1 + np.exp(-logits.astype("float64")))
    bce = -np.mean(labels * np.log(p) + (1 - labels) * np.log(1 - p))
    task = float(task_loss()(y_source, model.predict(x_source, verbose=0)))
    assert logs["domain_loss"] == pytest.approx(bce, rel=1e-4)
    assert logs["domain_accuracy"] == pytest.approx(np.mean((logits > 0) == labels))
    assert logs["task_loss"] == pytest.approx(task, rel=1e-4)
    assert logs["loss"] == pytest.approx(task + bce, rel=1e-4)


def test_fit_logs_and_plain_evaluate_drop_domain_logs():
    x_source, y_source, x_target = domain_data(seed=4, n_source=24, n_target=10)
    model = adaptation_model(CoralLoss(), with_domain_head=False)
    model.compile(optimizer="sgd", loss=task_loss(), metrics=["accuracy"])
    history = model.fit(domain_pairs((x_source, y_source), x_target, batch_size=8), verbose=0)
    assert sorted(history.history) == ["accuracy", "domain_loss", "loss", "task_loss"]
    logs = model.evaluate(x_target, np.zeros(len(x_target)), verbose=0, return_dict=True)
    assert sorted(logs) == ["accuracy", "loss"]


def test_call_and_predict_use_feature_extractor_and_task_head_only():
    x_source, _, x_target = domain_data()
    model = built(adaptation_model(), x_source, x_target)
    expected = ops.convert_to_numpy(model.task_head(model.feature_extractor(x_target)))
    np.testing.assert_allclose(model.predict(x_target, verbose=0), expected, rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(model(x_target)), expected, rtol=1e-6)
    paired = model(pair_inputs(x_source, x_target))
    assert sorted(paired) == ["source_features", "target_features", "task"]


def test_default_domain_head_is_a_hidden_layer_mlp():
    features, task, _ = layers()
    model = DomainAdaptationModel(features, task)
    x_source, _, x_target = domain_data()
    built(model, x_source, x_target)
    dense = [layer for layer in model.domain_head.layers if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [256, 256, 1]
    assert all(layer.activation is keras.activations.relu for layer in dense[:-1])


def test_mixed_precision_trains():
    keras.config.set_dtype_policy("mixed_float16")
    x_source, y_source, x_target = domain_data()
    model = adaptation_model(DomainConfusionLoss("confusion"))
    history = model.fit(
        domain_pairs((x_source, y_source), x_target, batch_size=4), epochs=1, verbose=0
    )
    assert np.isfinite(history.history["loss"][0])


def test_save_and_load_round_trip(tmp_path):
    x_source, y_source, x_target = domain_data()
    for loss in (DomainConfusionLoss("confusion"), MMDLoss(bandwidths=[1.0])):
        keras.backend.clear_session()
        trained = isinstance(loss, DomainConfusionLoss)
        model = adaptation_model(loss, 0.3, with_domain_head=trained)
        if trained:
            one_step(model, x_source, y_source, x_target)
        else:
            built(model, x_source, x_target)
        model.adaptation_scale.assign(0.25)
        path = os.path.join(tmp_path, f"{loss.name}.keras")
        model.save(path)
        loaded = keras.models.load_model(path, safe_mode=True)
        assert isinstance(loaded, DomainAdaptationModel)
        assert loaded.adaptation_loss.get_config() == loss.get_config()
        assert loaded.adaptation_weight == 0.3
        assert {"adaptation_loss", "adaptation_weight"} <= set(model.get_config())
        assert "loss" not in model.get_config()
        assert float(ops.convert_to_numpy(loaded.adaptation_scale)) == 0.25
        np.testing.assert_allclose(
            loaded.predict(x_target, verbose=0), model.predict(x_target, verbose=0), rtol=1e-6
        )
        if trained:
            for a, b in zip(snapshot(loaded.domain_head), snapshot(model.domain_head)):
                np.testing.assert_array_equal(a, b)
            one_step(loaded, x_source, y_source, x_target)  # compiled again, trains on


def test_bad_arguments_are_refused():
    features, task, domain = layers()
    with pytest.raises(ValueError, match="no domain head"):
        DomainAdaptationModel(features, task, domain, adaptation_loss=CoralLoss())
    with pytest.raises(ValueError, match="`adaptation_weight` must be a finite number >= 0"):
        DomainAdaptationModel(features, task, adaptation_weight=-1.0)
    with pytest.raises(ValueError, match="`adaptation_weight` must be a finite number"):
        DomainAdaptationModel(features, task, adaptation_weight=float("inf"))
    with pytest.raises(TypeError, match="`adaptation_loss` must be a domain loss object"):
        DomainAdaptationModel(features, task, adaptation_loss="coral")
    with pytest.raises(ValueError, match="Unrecognized keyword arguments.*'loss'"):
        DomainAdaptationModel(features, task, loss=CoralLoss())
    with pytest.raises(TypeError, match="task_head"):
        DomainAdaptationModel(features, np.ones(3))


def test_training_on_plain_batches_is_refused():
    x_source, y_source, _ = domain_data()
    model = adaptation_model()
    with pytest.raises(ValueError, match="domain_pairs"):
        model.fit(x_source, y_source, verbose=0)


@pytest.mark.parametrize("compiled_loss", [None, CoralLoss()])
def test_compile_needs_the_task_loss(compiled_loss):
    x_source, y_source, x_target = domain_data()
    model = DomainAdaptationModel(*layers())
    model.compile(optimizer="sgd", loss=compiled_loss)
    with pytest.raises(ValueError, match="task loss"):
        one_step(model, x_source, y_source, x_target)


def test_source_and_target_of_different_shapes_are_refused():
    x_source, y_source, _ = domain_data()
    model = adaptation_model()
    with pytest.raises(ValueError, match="one size"):
        one_step(model, x_source, y_source, np.zeros((len(x_source), 5), "float32"))


def test_feature_extractor_must_give_one_tensor():
    inputs = keras.Input((3,))
    dense = keras.layers.Dense(2)(inputs)
    extractor = keras.Model(inputs, {"a": dense, "b": dense})
    with pytest.raises(ValueError, match="one tensor"):
        DomainAdaptationModel(extractor, keras.layers.Dense(2))
    unbuilt = keras.layers.Lambda(lambda x: {"a": x, "b": x})
    model = DomainAdaptationModel(unbuilt, keras.layers.Dense(2))
    with pytest.raises(ValueError, match="one tensor"):
        model(np.zeros((2, 3), "float32"))


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="SavedModel export runs on TensorFlow"
)
def test_export_serves_the_task_model(tmp_path):
    import tensorflow as tf

    x_source, y_source, x_target = domain_data()
    model = adaptation_model()
    one_step(model, x_source, y_source, x_target)
    path = os.path.join(tmp_path, "exported")
    model.export(path, verbose=False)
    reloaded = tf.saved_model.load(path)
    served = reloaded.serve(tf.constant(x_target))
    np.testing.assert_allclose(served.numpy(), model.predict(x_target, verbose=0), rtol=1e-5)
    serving = model.serving_model()
    assert len(reloaded.variables) == len(serving.variables)  # no domain head


def test_serving_model_shares_the_trained_layers_and_leaves_the_domain_head_out():
    x_source, y_source, x_target = domain_data()
    model = adaptation_model()
    with pytest.raises(ValueError, match="not built"):
        model.serving_model()
    one_step(model, x_source, y_source, x_target)
    serving = model.serving_model()
    assert isinstance(serving, keras.Model) and serving.input_shape == (None, 3)
    layers_ = {id(layer) for layer in serving.layers}
    assert {id(model.feature_extractor), id(model.task_head)} <= layers_
    assert id(model.domain_head) not in layers_
    np.testing.assert_allclose(
        serving.predict(x_target, verbose=0), model.predict(x_target, verbose=0), rtol=1e-6
    )
    one_step(model, x_source, y_source, x_target)  # trains the shared layers in place
    np.testing.assert_allclose(
        serving.predict(x_target, verbose=0), model.predict(x_target, verbose=0), rtol=1e-6
    )


def test_the_serving_model_keeps_integer_inputs():
    extractor = keras.Sequential(
        [keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 3), keras.layers.Flatten()]
    )
    serving = DomainAdaptationModel(extractor, keras.layers.Dense(2)).serving_model()
    assert serving.inputs[0].dtype == "int32" and serving.input_shape == (None, 5)


def test_from_config_takes_custom_objects():
    class Halving(keras.layers.Layer):  # Unregistered, and not importable by name.
        def call(self, inputs):
            return inputs / 2

    features, _, domain = layers()
    model = DomainAdaptationModel(features, Halving(name="halving"), domain)
    config = model.get_config()
    with pytest.raises(TypeError, match="Halving"):
        DomainAdaptationModel.from_config(config)
    rebuilt = DomainAdaptationModel.from_config(config, custom_objects={"Halving": Halving})
    assert isinstance(rebuilt.task_head, Halving)
    assert config == model.get_config()  # Left alone.


def test_built_at_construction_when_the_extractor_has_an_input():
    extractor = keras.Sequential(
        [keras.Input((5,), dtype="int32"), keras.layers.Embedding(10, 3), keras.layers.Flatten()]
    )
    model = DomainAdaptationModel(extractor, keras.layers.Dense(2))
    assert model.built and model.domain_head.built
    assert [group.name for group in layer_groups(model)][-1] == "heads"
    model.compile(optimizer="sgd", loss=task_loss())
    tokens = np.random.default_rng(0).integers(0, 10, (12, 5)).astype("int32")
    pairs = domain_pairs((tokens, np.zeros(12, "int32")), tokens[:7] % 3, batch_size=4)
    history = model.fit(pairs, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize(
    "loss", [None, DomainConfusionLoss(mode="confusion"), CoralLoss(), MMDLoss()]
)
def test_an_all_one_class_batch_trains_with_finite_losses(loss):
    x_source, _, x_target = domain_data()
    one_class = np.ones(len(x_source), "int32")
    discrepancy = isinstance(loss, (CoralLoss, MMDLoss))
    model = adaptation_model(adaptation_loss=loss, with_domain_head=not discrepancy)
    n = min(len(x_source), len(x_target))
    history = model.fit(
        pair_inputs(x_source[:n], x_target[:n]), one_class[:n], batch_size=n, verbose=0
    )
    assert all(np.isfinite(values).all() for values in history.history.values())
    assert all(np.isfinite(w).all() for w in model.get_weights())
