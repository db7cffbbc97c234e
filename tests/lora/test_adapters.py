import json

import keras
import numpy as np
import pytest
from lora.lora_testing import bert_batch, perturb_factors
from testing_utils import dense_model, regression_data, tiny_bert, values

import keras_transfer as kt

BASE_LAYERS = ("a", "b")


class Base:
    """One set of base weights, and fresh models on it with a new random head
    (as a backbone freshly loaded from its preset, under a new head)."""

    def __init__(self, with_batchnorm=False):
        self.with_batchnorm = with_batchnorm
        self.model = dense_model(with_batchnorm)

    def fresh(self):
        model = dense_model(self.with_batchnorm)
        for name in BASE_LAYERS:
            model.get_layer(name).set_weights(self.model.get_layer(name).get_weights())
        return model


def train_task(model, seed, rank=2, **kwargs):
    kt.enable_lora(model, rank=rank, **kwargs)
    perturb_factors(model, seed=seed)
    x, y = regression_data(seed=seed)
    model.compile(keras.optimizers.SGD(0.05), "mse")
    model.fit(x, seed * y, epochs=2, batch_size=8, verbose=0)
    return model


def outputs(model):
    return model.predict(regression_data(8, seed=99)[0], verbose=0)


def manifest(path):
    with np.load(path) as archive:
        return json.loads(bytes(archive["manifest"]).decode())


def test_adapters_hold_the_factors_and_head_and_restore_the_model_exactly(tmp_path):
    base = Base()
    trained = train_task(base.fresh(), seed=1)
    path = tmp_path / "task.npz"
    kt.save_adapters(trained, path)
    saved = manifest(path)
    assert [entry["path"] for entry in saved["variables"]] == [
        "a/lora_kernel_a",
        "a/lora_kernel_b",
        "b/lora_kernel_a",
        "b/lora_kernel_b",
        "head/kernel",
        "head/bias",
    ]
    assert [entry[0] for entry in saved["base"]] == ["a/kernel", "a/bias", "b/kernel", "b/bias"]
    assert [(e["path"], e["rank"], e["alpha"]) for e in saved["lora_layers"]] == [
        ("a", 2, 2),
        ("b", 2, 2),
    ]

    served = base.fresh()
    assert not np.array_equal(outputs(served), outputs(trained))
    kt.load_adapters(served, path)
    np.testing.assert_array_equal(outputs(served), outputs(trained))
    assert served.get_layer("a").lora_rank == 2
    assert [v.path for v in served.trainable_weights] == [
        entry["path"] for entry in saved["variables"]
    ]


def test_adapters_swap_on_one_base_in_memory(tmp_path):
    base = Base()
    first, second = train_task(base.fresh(), seed=1), train_task(base.fresh(), seed=2)
    kt.save_adapters(first, tmp_path / "first.npz")
    kt.save_adapters(second, tmp_path / "second.npz")
    served = base.fresh()
    for name, expected in [("first", first), ("second", second), ("first", first)]:
        kt.load_adapters(served, tmp_path / f"{name}.npz")
        np.testing.assert_array_equal(outputs(served), outputs(expected))


def test_the_alpha_comes_from_the_file(tmp_path):
    base = Base()
    trained = train_task(base.fresh(), seed=1, alpha=6)
    kt.save_adapters(trained, tmp_path / "task.npz")
    served = base.fresh()
    kt.enable_lora(served, rank=2)  # Same rank, Keras' default alpha.
    kt.load_adapters(served, tmp_path / "task.npz")
    assert served.get_layer("a").lora_alpha == 6
    np.testing.assert_array_equal(outputs(served), outputs(trained))


def test_a_trained_batchnorm_in_the_head_keeps_its_statistics(tmp_path):
    def model_with_head_norm(source=None):
        inputs = keras.Input((6,))
        hidden = keras.layers.Dense(8, activation="relu", name="a")(inputs)
        hidden = keras.layers.Dense(4, name="head_dense")(hidden)
        outputs = keras.layers.BatchNormalization(name="head_norm")(hidden)
        model = keras.Model(inputs, outputs)
        if source is not None:
            model.get_layer("a").set_weights(values(source.get_layer("a").weights[:2]))
        return model

    trained = model_with_head_norm()
    kt.enable_lora(trained, rank=2)
    kt.freeze(trained, trainable_groups="all", freeze_batchnorm=False)
    trained.compile(keras.optimizers.SGD(0.05), "mse")
    x, _ = regression_data()
    trained.fit(x, np.ones((32, 4), "float32"), epochs=1, batch_size=8, verbose=0)
    kt.save_adapters(trained, tmp_path / "task.npz")
    saved = [entry["path"] for entry in manifest(tmp_path / "task.npz")["variables"]]
    assert "head_norm/moving_mean" in saved and "a/kernel" not in saved
    served = model_with_head_norm(trained)
    kt.load_adapters(served, tmp_path / "task.npz")
    np.testing.assert_array_equal(served.predict(x, verbose=0), trained.predict(x, verbose=0))


def test_keras_hub_task_adapters_restore_into_a_fresh_backbone(tmp_path):
    import keras_hub

    def classifier():
        return keras_hub.models.BertTextClassifier(
            backbone=tiny_bert(), num_classes=2, preprocessor=None
        )

    trained = classifier()
    trained.backbone.save_weights(tmp_path / "preset.weights.h5")
    summary = kt.enable_lora(trained, rank=2, layers="query|value")
    assert summary.head == "logits"
    perturb_factors(trained)
    kt.save_adapters(trained, tmp_path / "task.npz")
    served = classifier()
    served.backbone.load_weights(tmp_path / "preset.weights.h5")  # The same preset.
    kt.load_adapters(served, tmp_path / "task.npz")
    x, _ = bert_batch()
    np.testing.assert_array_equal(served.predict(x, verbose=0), trained.predict(x, verbose=0))


def test_another_base_is_refused_naming_the_first_differing_variable(tmp_path):
    base = Base()
    kt.save_adapters(train_task(base.fresh(), seed=1), tmp_path / "task.npz")
    served = base.fresh()
    kernel = served.get_layer("b").kernel
    kernel.assign(kernel + 1e-3)
    with pytest.raises(ValueError, match="base variable 'b/kernel' holds other values"):
        kt.load_adapters(served, tmp_path / "task.npz")
    assert not served.get_layer("a").lora_enabled  # Nothing was changed.


def renamed_model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="a")(inputs)
    hidden = keras.layers.Dense(8, activation="relu", name="b_renamed")(hidden)
    return keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))


def wider_head_model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="a")(inputs)
    hidden = keras.layers.Dense(8, activation="relu", name="b")(hidden)
    return keras.Model(inputs, keras.layers.Dense(2, name="head")(hidden))


def lora_everywhere():
    model = dense_model()
    kt.enable_lora(model, rank=2, groups=".*")
    return model


def lora_of_rank_three():
    model = dense_model()
    kt.enable_lora(model, rank=3)
    return model


@pytest.mark.parametrize(
    "make_model, message",
    [
        (renamed_model, "LoRA on the Dense 'b', but model '.*' has no such layer"),
        (lora_of_rank_three, "Layer 'a' has LoRA of rank 3, the adapters rank 2"),
        (lora_everywhere, "has LoRA on 'head', which the adapters do not have"),
        (wider_head_model, r"'head/kernel' has shape \(8, 2\) in the model but \(8, 1\)"),
        (lambda: dense_model(with_batchnorm=True), "variable 'bn/gamma' that the adapters' base"),
    ],
)
def test_another_architecture_is_refused_naming_the_first_mismatch(tmp_path, make_model, message):
    kt.save_adapters(train_task(dense_model(), seed=1), tmp_path / "task.npz")
    with pytest.raises(ValueError, match=message):
        kt.load_adapters(make_model(), tmp_path / "task.npz")


def test_saving_a_model_without_lora_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no layer with LoRA enabled.*kt.enable_lora"):
        kt.save_adapters(dense_model(), tmp_path / "task.npz")


def test_a_file_that_is_no_adapters_file_is_refused(tmp_path):
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    with pytest.raises(ValueError, match="not an adapters file"):
        kt.load_adapters(dense_model(), tmp_path / "other.npz")
    with pytest.raises(ValueError, match="not an adapters file"):
        kt.load_adapters(dense_model(), tmp_path / "missing.npz")
