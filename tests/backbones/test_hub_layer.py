import keras
import numpy as np
import pytest

import keras_transfer as kt
from keras_transfer.backbones import HubLayer

ON_TENSORFLOW = keras.config.backend() == "tensorflow"
tensorflow_only = pytest.mark.skipif(
    not ON_TENSORFLOW, reason="kt.HubLayer runs SavedModels: TensorFlow backend only"
)
if ON_TENSORFLOW:
    from backbones.hub_testing import (
        assert_all_changed,
        assert_same,
        data,
        fit,
        hub_model,
        hub_values,
        select,
    )
    from backbones.saved_models import (
        INPUT_DIM,
        UNITS,
        save_encoder,
        save_named_variables,
        save_signature_only,
    )

BLOCKS = ["encoder/layer_0", "encoder/layer_1", "encoder/layer_2"]


@pytest.fixture(scope="module")
def encoder_path(tmp_path_factory):
    return save_encoder(tmp_path_factory.mktemp("encoder"))


@pytest.mark.skipif(ON_TENSORFLOW, reason="checks the error on the other backends")
def test_other_backends_get_an_error_naming_tensorflow(tmp_path):
    with pytest.raises(RuntimeError, match="needs the TensorFlow backend.*KERAS_BACKEND"):
        HubLayer(str(tmp_path))


@tensorflow_only
@pytest.mark.parametrize("functional", [False, True], ids=["sequential", "functional"])
def test_computes_what_the_saved_model_computes(encoder_path, functional):
    model = hub_model(encoder_path, functional=functional)
    x, _ = data(4)
    hub, head = model.get_layer("encoder"), model.get_layer("head")
    assert hub.output.shape == (None, UNITS)
    expected = head(hub.resolved_object(x))
    np.testing.assert_allclose(model.predict(x, verbose=0), expected, atol=1e-6)


@tensorflow_only
@pytest.mark.parametrize("hub_attributes", [True, False], ids=["tf_hub", "plain"])
def test_variables_are_keras_weights(tmp_path, hub_attributes):
    path = save_encoder(tmp_path, hub_attributes=hub_attributes)
    layer = HubLayer(path, trainable=True)
    names = [layer.saved_variable_names[v.path] for v in layer.trainable_weights]
    assert names == [f"{block}/{leaf}" for block in BLOCKS for leaf in ("kernel", "bias")]
    assert [v.path for v in layer.non_trainable_weights] == [
        "hub_layer/encoder_layer_1_moving_mean"
    ]
    frozen = HubLayer(path, name="frozen")
    assert frozen.trainable_weights == [] and len(frozen.non_trainable_weights) == 7


@tensorflow_only
def test_fine_tuning_changes_the_saved_model_and_lowers_the_loss(encoder_path):
    model = hub_model(encoder_path)
    head = model.get_layer("head")
    head.trainable = False  # Only the SavedModel's variables can lower the loss.
    hub = model.get_layer("encoder")
    x, _ = data(4)
    before_values, before_outputs = hub_values(model), np.array(hub.resolved_object(x))
    history = fit(model, epochs=4)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]
    assert_all_changed(before_values, hub_values(model))
    # The SavedModel's own function reads the variables the optimizer updated.
    after_outputs = np.array(hub.resolved_object(x))
    assert not np.allclose(before_outputs, after_outputs)
    np.testing.assert_allclose(hub(x), after_outputs, atol=1e-6)


@tensorflow_only
def test_training_argument_reaches_the_saved_model(encoder_path):
    layer = HubLayer(encoder_path, trainable=True)
    moving_mean = layer.resolved_object.encoder.blocks[1].moving_mean
    x, _ = data(8)
    layer(x, training=False)
    np.testing.assert_array_equal(moving_mean.numpy(), np.zeros(UNITS))
    layer(x, training=True)
    assert np.any(moving_mean.numpy() != 0)
    frozen = HubLayer(encoder_path, name="frozen")  # Frozen: inference mode, as BatchNorm.
    frozen(x, training=True)
    np.testing.assert_array_equal(frozen.resolved_object.encoder.blocks[1].moving_mean, 0)


@tensorflow_only
def test_regularization_losses_reach_model_losses(encoder_path):
    model = hub_model(encoder_path, functional=True)
    x, y = data(8)
    model(x)
    expected = model.get_layer("encoder").resolved_object.regularization_losses[0]()
    assert len(model.losses) == 1
    np.testing.assert_allclose(model.losses[0], expected, rtol=1e-6)
    model.compile(loss="mse")
    mse = np.mean((model.predict(x, verbose=0) - y) ** 2)
    np.testing.assert_allclose(model.evaluate(x, y, verbose=0), mse + expected, rtol=1e-5)
    model.get_layer("encoder").trainable = False
    model(x)
    assert model.losses == []


@tensorflow_only
def test_signature_with_output_key_or_all_outputs(encoder_path):
    x, _ = data(4)
    mean = HubLayer(encoder_path, signature="serving_default", output_key="mean")
    model = keras.Sequential([keras.Input((INPUT_DIM,)), mean])
    expected = mean.resolved_object.signatures["serving_default"](features=x)
    np.testing.assert_allclose(model.predict(x, verbose=0), expected["mean"], atol=1e-6)
    every = HubLayer(encoder_path, signature="serving_default", signature_outputs_as_dict=True)
    inputs = keras.Input((INPUT_DIM,))
    outputs = every({"features": inputs})
    assert sorted(outputs) == ["features", "mean"] and outputs["features"].shape == (None, UNITS)
    predicted = keras.Model(inputs, outputs).predict(x, verbose=0)
    np.testing.assert_allclose(predicted["features"], expected["features"], atol=1e-6)


@tensorflow_only
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"signature": "serving_default"}, "either `output_key`"),
        (
            {"signature": "serving_default", "output_key": "mean", "signature_outputs_as_dict": 1},
            "not both",
        ),
        ({"signature": "nope", "output_key": "mean"}, "no signature 'nope'.*serving_default"),
        ({"signature_outputs_as_dict": True}, "needs a `signature`"),
    ],
)
def test_signature_arguments_are_checked(encoder_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        HubLayer(encoder_path, **kwargs)


@tensorflow_only
def test_unknown_output_key_lists_the_outputs(encoder_path):
    layer = HubLayer(encoder_path, signature="serving_default", output_key="logits")
    with pytest.raises(ValueError, match="no output 'logits'.*'features', 'mean'"):
        layer(data(2)[0])


@tensorflow_only
def test_saved_model_without_call_needs_a_signature(tmp_path):
    path = save_signature_only(tmp_path)
    with pytest.raises(ValueError, match="no `__call__`.*serving_default"):
        HubLayer(path)
    layer = HubLayer(path, signature="serving_default", output_key="scaled", trainable=True)
    np.testing.assert_allclose(layer(np.ones((2, 1), "float32")), [[2.0], [2.0]])
    assert len(layer.trainable_weights) == 1


@tensorflow_only
def test_mixed_precision_leaves_the_saved_model_dtypes_alone(encoder_path):
    keras.config.set_dtype_policy("mixed_float16")
    model = hub_model(encoder_path)
    assert model.get_layer("encoder").dtype_policy.name == "float32"
    assert np.isfinite(fit(model).history["loss"][0])


@tensorflow_only
def test_trainable_false_freezes_it(encoder_path):
    model = hub_model(encoder_path, trainable=False)
    before = hub_values(model)
    fit(model, epochs=1)
    assert_same(before, hub_values(model))


@tensorflow_only
def test_save_and_reload_restores_fine_tuned_values(encoder_path, tmp_path):
    model = hub_model(encoder_path, functional=True)
    fit(model, epochs=2)
    x, _ = data(8)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=False)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-6)
    assert_same(hub_values(model), hub_values(reloaded))
    assert reloaded.get_layer("encoder").get_config()["handle"] == encoder_path


@tensorflow_only
def test_saved_names_ignore_the_name_scope_it_is_loaded_in(encoder_path):
    with keras.name_scope("outer"):
        layer = HubLayer(encoder_path, trainable=True)
    assert list(layer.saved_variable_names.values())[:2] == [
        f"{BLOCKS[0]}/{leaf}" for leaf in ("kernel", "bias")
    ]
    assert [name for name, _ in layer.variable_groups()] == BLOCKS


@tensorflow_only
def test_sequential_reloads_with_the_same_names_and_values(encoder_path, tmp_path):
    model = hub_model(encoder_path)
    fit(model)
    model.save(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=False)
    assert_same(hub_values(model), hub_values(reloaded))
    assert [g.name for g in kt.layer_groups(reloaded)] == [*BLOCKS, "head"]


@tensorflow_only
def test_safe_mode_refuses_to_reload_a_saved_model(encoder_path, tmp_path):
    hub_model(encoder_path).save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="SavedModel is a program.*safe_mode=False"):
        keras.models.load_model(tmp_path / "model.keras")


@tensorflow_only
def test_config_round_trip_outside_safe_mode(encoder_path):
    layer = HubLayer(
        encoder_path, signature="serving_default", output_key="mean", group_patterns=["."]
    )
    config = layer.get_config()
    assert HubLayer.from_config(config).get_config() == config
    model = keras.Sequential([keras.Input((INPUT_DIM,)), layer])
    clone = keras.models.clone_model(model)
    assert clone.layers[0].resolved_object is not layer.resolved_object


@tensorflow_only
def test_layer_groups_split_it_into_its_blocks(encoder_path):
    model = hub_model(encoder_path)
    groups = kt.layer_groups(model)
    assert [group.name for group in groups] == [*BLOCKS, "head"]
    names = model.get_layer("encoder").saved_variable_names
    assert [names[v.path] for v in groups[1].variables] == [
        "encoder/layer_1/kernel",
        "encoder/layer_1/bias",
        "encoder/layer_1/moving_mean",
    ]


@tensorflow_only
def test_freeze_schedule_unfreezes_its_blocks_in_order(encoder_path):
    model = hub_model(encoder_path, trainable=False)
    schedule = kt.FreezeSchedule(model, {0: 1, 1: 2, 2: "all"}, verbose=0)
    start = hub_values(model)
    fit(model, epochs=1, callbacks=[schedule])
    # Only the head trains: the SavedModel runs in inference mode, untouched.
    assert_same(start, hub_values(model))
    fit(model, epochs=2, callbacks=[schedule], initial_epoch=1)
    epoch_1 = hub_values(model)
    assert_all_changed(select(start, BLOCKS[2]), select(epoch_1, BLOCKS[2]))
    assert_same(select(start, BLOCKS[0]), select(epoch_1, BLOCKS[0]))
    for name in ("encoder/layer_1/kernel", "encoder/layer_1/bias"):
        np.testing.assert_array_equal(start[name], epoch_1[name])
    fit(model, epochs=3, callbacks=[schedule], initial_epoch=2)
    assert_all_changed(select(epoch_1, BLOCKS[0]), select(hub_values(model), BLOCKS[0]))


@tensorflow_only
def test_discriminative_lr_gives_its_blocks_their_own_rates(encoder_path):
    model = hub_model(encoder_path)
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.05), model, decay=2)
    fit(model, epochs=1, optimizer=optimizer)
    hub = model.get_layer("encoder")
    by_name = {hub.saved_variable_names[v.path]: v for v in hub.weights}
    for block, multiplier in zip(BLOCKS, (0.125, 0.25, 0.5)):
        assert optimizer.multiplier_for(by_name[f"{block}/kernel"]) == multiplier
    assert optimizer.multiplier_for(model.get_layer("head").kernel) == 1.0


@tensorflow_only
@pytest.mark.parametrize(
    "names, groups",
    [
        (
            ["embeddings/kernel", "transformer_layer_0/kernel", "transformer_layer_1/kernel"]
            + ["pooler/dense/kernel"],
            ["embeddings", "transformer_layer_0", "transformer_layer_1", "pooler/dense"],
        ),
        (
            ["stem/kernel", "block_1/conv/kernel", "block_1/conv/bias", "block_2/conv/kernel"],
            ["stem", "block_1", "block_2"],
        ),
        (
            ["net/block2a_expand/kernel", "net/block2b_project/kernel", "net/block3a/kernel"],
            ["net/block2", "net/block3"],
        ),
        # Ordered as the SavedModel reads them, not as the names sort.
        (
            ["encoder/layer_9/kernel", "encoder/layer_10/kernel"],
            ["encoder/layer_9", "encoder/layer_10"],
        ),
        # A group with nothing to train joins its neighbour.
        (
            ["stats/moving_mean", "block_0/kernel", "block_1/kernel", "top/moving_var"],
            ["block_0", "block_1"],
        ),
        (["dense/kernel", "dense/bias"], []),
    ],
)
def test_automatic_blocks_from_variable_names(tmp_path, names, groups):
    layer = HubLayer(save_named_variables(tmp_path, names), trainable=True)
    assert [name for name, _ in layer.variable_groups()] == groups


@tensorflow_only
def test_group_patterns_choose_the_blocks(encoder_path):
    layer = HubLayer(encoder_path, group_patterns=["layer_[01]/", "layer_2/"])
    groups = layer.variable_groups()
    assert [name for name, _ in groups] == ["layer_[01]/", "layer_2/"]
    assert [len(variables) for _, variables in groups] == [5, 2]
    with pytest.raises(ValueError, match="'layer_7/' matches none of the SavedModel variables"):
        HubLayer(encoder_path, group_patterns=["layer_[012]/", "layer_7/"])
    with pytest.raises(ValueError, match="layer_2/kernel.*match none.*'.\\*'"):
        HubLayer(encoder_path, group_patterns=["layer_[01]/"])
