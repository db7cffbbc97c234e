"""Hostile and ordinary `.keras` files: every model the library saves reloads
with `safe_mode=True`, and files that carry code are refused without running it.

The kt.HubLayer cases live in tests/backbones/test_hub_layer.py:
`test_safe_mode_refuses_to_reload_a_saved_model` (refused, with a message) and
`test_save_and_reload_restores_fine_tuned_values` (`safe_mode=False` loads);
this file adds that the refused SavedModel is never even loaded.
"""

import json
import os
import zipfile

import keras
import numpy as np
import pytest
from adaptation.adaptation_utils import adaptation_model, domain_data, one_step
from distillation.distillation_testing import classifier, frozen_teacher, sparse_cce
from distillation.distillation_testing import data as distillation_data
from testing_utils import dense_model, regression_data, values

import keras_transfer as kt
from keras_transfer.finetune.classifier import image_classifier

ON_TENSORFLOW = keras.config.backend() == "tensorflow"


def _classifier_with_discriminative_lr():
    """kt.finetune's image classifier, compiled with DiscriminativeLR over a
    OneCycle schedule, after two steps (so optimizer state exists)."""
    inputs = keras.Input((8, 8, 3))
    hidden = keras.layers.Conv2D(4, 3, name="conv")(inputs)
    backbone = keras.Model(inputs, keras.layers.Conv2D(4, 3, name="conv2")(hidden), name="tiny")
    model = image_classifier(backbone, (8, 8, 3), num_classes=3)
    schedule = kt.schedules.OneCycle(1e-2, total_steps=10)
    model.compile(kt.DiscriminativeLR(keras.optimizers.Adam(schedule), model), sparse_cce())
    rng = np.random.default_rng(0)
    x, y = rng.uniform(size=(4, 8, 8, 3)).astype("float32"), np.array([0, 1, 2, 0])
    for _ in range(2):
        model.train_on_batch(x, y)
    return model, x


def _dense_with_slanted_triangular():
    model = dense_model()
    schedule = kt.schedules.SlantedTriangular(0.05, total_steps=20)
    model.compile(kt.DiscriminativeLR(keras.optimizers.SGD(schedule), model, decay=2.0), "mse")
    x, y = regression_data(8)
    for _ in range(2):
        model.train_on_batch(x, y)
    return model, x


def _distillation_model():
    model = kt.DistillationModel(
        frozen_teacher(), classifier(4, "student"), distillation_weight=0.5
    )
    model.compile("adam", sparse_cce())
    x, y = distillation_data(8)
    model.fit(x, y, epochs=1, verbose=0)
    return model, x


def _domain_adaptation(loss):
    def build():
        x_source, y_source, x_target = domain_data()
        model = adaptation_model(
            loss(), with_domain_head=isinstance(loss(), kt.DomainConfusionLoss)
        )
        one_step(model, x_source, y_source, x_target)
        return model, x_target

    return build


def _gradient_reversal():
    inputs = keras.Input((3,))
    reversed_ = kt.GradientReversal(0.4, name="reversal")(keras.layers.Dense(4)(inputs))
    model = keras.Model(inputs, keras.layers.Dense(1)(reversed_))
    model.compile("sgd", "mse")
    return model, np.ones((2, 3), "float32")


def _knowledge_distillation_loss():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    model.compile("sgd", loss=kt.KnowledgeDistillationLoss(temperature=2.5))
    model.train_on_batch(np.ones((2, 3), "float32"), np.ones((2, 3), "float32"))
    return model, np.ones((2, 3), "float32")


SAVED_MODELS = {
    "finetune_classifier_discriminative_lr_one_cycle": _classifier_with_discriminative_lr,
    "discriminative_lr_slanted_triangular": _dense_with_slanted_triangular,
    "distillation_model": _distillation_model,
    "domain_adaptation_domain_confusion": _domain_adaptation(
        lambda: kt.DomainConfusionLoss("adversarial")
    ),
    "domain_adaptation_coral": _domain_adaptation(kt.CoralLoss),
    "domain_adaptation_mmd": _domain_adaptation(lambda: kt.MMDLoss(bandwidths=[1.0])),
    "gradient_reversal": _gradient_reversal,
    "knowledge_distillation_loss": _knowledge_distillation_loss,
}


@pytest.mark.parametrize("name", sorted(SAVED_MODELS))
def test_every_saved_model_type_loads_in_safe_mode(name, tmp_path):
    model, x = SAVED_MODELS[name]()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is type(model)
    assert type(loaded.optimizer) is type(model.optimizer)
    assert type(loaded.loss) is type(model.loss)
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=0, atol=1e-6
    )
    for saved, reloaded in zip(
        values(model.optimizer.variables), values(loaded.optimizer.variables)
    ):
        np.testing.assert_array_equal(saved, reloaded)


# --- Files that carry code --------------------------------------------------------


def _marker_lambda(marker):
    """A Lambda whose function creates `marker`: the stand-in for a payload.
    The path is a constant of the function's own code, as in a crafted file."""
    function = eval(f"lambda x: (open({str(marker)!r}, 'w').close(), x)[1]")
    return keras.layers.Lambda(function, name="payload")


def _rewrite_config(path, edit, out):
    """Copies the `.keras` zip at `path` to `out` with `edit(config)` applied to
    its config.json, the other members (weights, metadata) unchanged."""
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(out, "w") as target:
        for item in source.infolist():
            data = source.read(item)
            if item.filename == "config.json":
                config = json.loads(data)
                edit(config)
                data = json.dumps(config).encode()
            target.writestr(item, data)
    return out


@pytest.fixture
def kt_model_file(tmp_path):
    """A saved kt model to tamper with: Dense -> GradientReversal -> Dense."""
    model = keras.Sequential(
        [
            keras.Input((3,)),
            keras.layers.Dense(4, name="dense"),
            kt.GradientReversal(0.5, name="reversal"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    path = tmp_path / "kt_model.keras"
    model.save(path)
    return path


def test_a_saved_lambda_model_is_refused_and_its_code_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    model = keras.Sequential([keras.Input((3,)), _marker_lambda(marker), keras.layers.Dense(1)])
    model.save(tmp_path / "lambda.keras")
    marker.unlink()  # Building the model ran the function once.
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(tmp_path / "lambda.keras", safe_mode=True)
    assert not marker.exists()
    # The payload is live: a trusting load runs it.
    keras.models.load_model(tmp_path / "lambda.keras", safe_mode=False)
    assert marker.exists()


def test_marshalled_bytecode_injected_into_a_kt_model_is_refused(kt_model_file, tmp_path):
    marker = tmp_path / "payload_ran"
    payload = keras.saving.serialize_keras_object(_marker_lambda(marker))
    assert payload["config"]["function"]["class_name"] == "__lambda__"  # marshalled bytecode
    crafted = _rewrite_config(
        kt_model_file,
        lambda config: config["config"]["layers"].insert(1, payload),
        tmp_path / "crafted.keras",
    )
    with pytest.raises(ValueError, match="safe_mode"):
        keras.models.load_model(crafted, safe_mode=True)
    assert not marker.exists()
    with pytest.raises(ValueError, match="safe_mode"):  # the default is safe
        keras.models.load_model(crafted)
    assert not marker.exists()
    keras.models.load_model(crafted, safe_mode=False)
    assert marker.exists()


@pytest.fixture
def payload_module(tmp_path, monkeypatch):
    """An importable module whose import, class and function each leave a mark."""
    (tmp_path / "hostile_payload.py").write_text(
        "import pathlib\n"
        f"HERE = pathlib.Path({str(tmp_path)!r})\n"
        "(HERE / 'imported').touch()\n"
        "class Payload:\n"
        "    @classmethod\n"
        "    def from_config(cls, config):\n"
        "        (HERE / 'called').touch()\n"
        "def payload(*args, **kwargs):\n"
        "    (HERE / 'called').touch()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _as_layer(module, class_name):
    return {"module": module, "class_name": class_name, "config": {}, "registered_name": None}


def _as_activation(module, function):
    return {
        "module": module,
        "class_name": "function",
        "config": function,
        "registered_name": function,
    }


INJECTIONS = {
    "layer_os_system": ("layer", _as_layer("os", "system")),
    "layer_builtins_eval": ("layer", _as_layer("builtins", "eval")),
    "layer_importable_module_class": ("layer", _as_layer("hostile_payload", "Payload")),
    "activation_os_system": ("activation", _as_activation("os", "system")),
    "activation_builtins_eval": ("activation", _as_activation("builtins", "eval")),
    "activation_importable_module_function": (
        "activation",
        _as_activation("hostile_payload", "payload"),
    ),
}


@pytest.mark.parametrize("name", sorted(INJECTIONS))
@pytest.mark.parametrize("safe_mode", [True, False])
def test_a_module_and_class_name_naming_any_callable_is_refused(
    name, safe_mode, kt_model_file, payload_module
):
    where, injected = INJECTIONS[name]

    def edit(config):
        layers = config["config"]["layers"]
        dense = next(layer for layer in layers if layer["config"].get("name") == "dense")
        if where == "layer":
            layers[layers.index(dense)] = injected
        else:
            dense["config"]["activation"] = injected

    crafted = _rewrite_config(kt_model_file, edit, payload_module / "crafted.keras")
    # Keras resolves only registered or Keras classes and functions, whatever
    # `safe_mode` says: it never imports the module a config names.
    with pytest.raises(TypeError, match="Could not locate"):
        keras.models.load_model(crafted, safe_mode=safe_mode)
    assert not (payload_module / "imported").exists()
    assert not (payload_module / "called").exists()


@pytest.mark.skipif(not ON_TENSORFLOW, reason="kt.HubLayer: TensorFlow backend only")
def test_safe_mode_refuses_a_hub_layer_before_loading_its_saved_model(tmp_path, monkeypatch):
    import tensorflow as tf
    from backbones.saved_models import save_encoder

    model = keras.Sequential([keras.Input((4,)), kt.HubLayer(save_encoder(tmp_path / "encoder"))])
    model.save(tmp_path / "hub.keras")
    loads = []
    real_load = tf.saved_model.load
    monkeypatch.setattr(
        tf.saved_model, "load", lambda *a, **k: loads.append(a) or real_load(*a, **k)
    )
    with pytest.raises(ValueError, match="SavedModel is a program"):
        keras.models.load_model(tmp_path / "hub.keras", safe_mode=True)
    assert loads == []
    keras.models.load_model(tmp_path / "hub.keras", safe_mode=False)
    assert len(loads) == 1


# --- keras_transfer's own loading entry point -------------------------------------


def test_load_backbone_does_not_open_a_keras_file(kt_model_file):
    # `.keras` files are for `keras.models.load_model`; load_backbone takes
    # presets, names and SavedModel folders, and says so.
    with pytest.raises(ValueError, match="could not be fetched"):
        kt.load_backbone(str(kt_model_file))


@pytest.mark.parametrize(
    "injected",
    [
        _as_layer("os", "system") | {"registered_name": "os>system"},
        {"module": "keras.layers", "class_name": "Lambda", "config": {}, "registered_name": None},
    ],
)
def test_a_crafted_kerashub_preset_folder_is_refused(tmp_path, payload_module, injected):
    # A local preset folder's config.json is deserialized by KerasHub's own
    # `from_preset` (safe mode, and only Backbone classes).
    preset = tmp_path / "preset"
    preset.mkdir()
    (preset / "config.json").write_text(json.dumps(injected))
    (preset / "metadata.json").write_text(json.dumps({"keras_version": keras.__version__}))
    with pytest.raises(ValueError, match="could not be loaded as a KerasHub preset"):
        kt.load_backbone(str(preset))
    assert not (payload_module / "imported").exists()
    assert not (payload_module / "called").exists()


@pytest.mark.parametrize("name", ["MobileNetV2", "mobilenetv2"])
def test_a_name_never_falls_back_to_a_local_folder_of_that_name(tmp_path, monkeypatch, name):
    # A folder named like a keras.applications model, holding a "SavedModel"
    # (a program), in the working directory: the name still means the model.
    os.makedirs(tmp_path / name)
    (tmp_path / name / "saved_model.pb").write_bytes(b"not for loading")
    monkeypatch.chdir(tmp_path)
    backbone = kt.load_backbone(name, weights=None, input_shape=(32, 32, 3), alpha=0.35)
    assert backbone.name.startswith("mobilenetv2")
    # Named as a path, the folder is what the user asked for: a SavedModel.
    with pytest.raises(ValueError, match="is a TF SavedModel"):
        kt.load_backbone(f"./{name}")
