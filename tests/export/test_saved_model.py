import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
from adaptation.adaptation_utils import adaptation_model, domain_data, one_step
from distillation.distillation_testing import classifier, frozen_teacher, sparse_cce
from distillation.distillation_testing import data as distillation_data

from keras_transfer.distillation import DistillationModel
from keras_transfer.export import export_saved_model
from keras_transfer.groups.hooks import ServingModel

EXPORTING = keras.backend.backend() in ("tensorflow", "jax")
needs_export = pytest.mark.skipif(
    not EXPORTING, reason="SavedModel export needs the TensorFlow or JAX backend"
)
VOCABULARY = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "movie", "the", "a"]
TEXTS = ["the good movie", "bad", "a bad bad movie", ""]


def text_model_and_preprocessor(sequence_length=8):
    import keras_hub

    tokenizer = keras_hub.models.BertTokenizer(vocabulary=VOCABULARY)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(
        tokenizer, sequence_length=sequence_length
    )
    token_ids = keras.Input((sequence_length,), dtype="int32", name="token_ids")
    hidden = keras.layers.Embedding(len(VOCABULARY), 4)(token_ids)
    hidden = keras.layers.GlobalAveragePooling1D()(hidden)
    model = keras.Model(token_ids, keras.layers.Dense(3, name="head")(hidden))
    return model, preprocessor


def image_model(channels=1, activation=None, units=3):
    return keras.Sequential(
        [
            keras.Input((6, 5, channels)),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(units, activation=activation, name="head"),
        ]
    )


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def serve_in_fresh_process(path, inputs: dict, imports="import tensorflow_text"):
    """Loads the SavedModel with TensorFlow alone in a new Python process."""
    script = textwrap.dedent(
        f"""
        import json, sys
        import numpy as np
        import tensorflow as tf
        {imports}
        served = tf.saved_model.load({path!r})
        inputs = {{k: tf.constant(v) for k, v in json.loads(sys.argv[1]).items()}}
        if "images" in inputs:
            inputs["images"] = tf.cast(inputs["images"], tf.uint8)
        result = served.signatures["serving_default"](**inputs)
        assert not any(name.startswith("keras_transfer") for name in sys.modules)
        print(json.dumps({{k: np.asarray(v).tolist() for k, v in result.items()}},
                         default=lambda b: b.decode()))
        """
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    completed = subprocess.run(
        [sys.executable, "-c", script, json.dumps(inputs)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@needs_export
def test_text_model_serves_raw_strings_in_a_fresh_tensorflow_process(tmp_path):
    import tensorflow as tf

    model, preprocessor = text_model_and_preprocessor()
    path = export_saved_model(
        model, str(tmp_path / "text"), preprocessor, class_names=["neg", "neu", "pos"]
    )
    served = serve_in_fresh_process(path, {"text": TEXTS})

    token_ids = keras.ops.convert_to_numpy(preprocessor(tf.constant(TEXTS))["token_ids"])
    expected = softmax(keras.ops.convert_to_numpy(model.predict(token_ids, verbose=0)))
    np.testing.assert_allclose(served["probabilities"], expected, rtol=0, atol=1e-5)
    assert served["class_id"] == expected.argmax(axis=-1).tolist()
    assert served["label"] == [["neg", "neu", "pos"][i] for i in expected.argmax(axis=-1)]


@needs_export
def test_lora_model_serves_merged_and_keeps_its_adapters(tmp_path):
    import tensorflow as tf
    from lora.lora_testing import perturb_factors

    import keras_transfer as kt

    model, preprocessor = text_model_and_preprocessor()
    plain_parameters = model.count_params()
    kt.enable_lora(model, rank=2, alpha=4)
    perturb_factors(model)
    factors = [v for v in model.weights if "lora" in v.path]
    assert factors

    path = export_saved_model(model, str(tmp_path / "lora"), preprocessor)
    served = tf.saved_model.load(path)
    result = served.serving_default(text=tf.constant(TEXTS))

    token_ids = keras.ops.convert_to_numpy(preprocessor(tf.constant(TEXTS))["token_ids"])
    expected = softmax(keras.ops.convert_to_numpy(model.predict(token_ids, verbose=0)))
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, rtol=0, atol=1e-5)
    # One kernel per layer is served, no factors; the model keeps its LoRA.
    assert sum(int(np.prod(v.shape)) for v in served.variables) == plain_parameters
    embedding = next(layer for layer in model.layers if isinstance(layer, keras.layers.Embedding))
    assert embedding.lora_enabled
    assert {id(v) for v in factors} <= {id(v) for v in model.weights}


@needs_export
def test_image_model_takes_uint8_images_of_any_size(tmp_path):
    import tensorflow as tf

    model = image_model()
    path = export_saved_model(
        model, str(tmp_path / "images"), image_scale=1 / 255, image_offset=-0.5
    )
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 13, 9, 1)).astype("uint8")
    served = serve_in_fresh_process(path, {"images": images.tolist()}, imports="")

    resized = tf.image.resize(images.astype("float32"), (6, 5)).numpy() / 255 - 0.5
    expected = softmax(keras.ops.convert_to_numpy(model.predict(resized, verbose=0)))
    np.testing.assert_allclose(served["probabilities"], expected, rtol=0, atol=1e-5)
    assert served["label"] == [str(i) for i in expected.argmax(axis=-1)]


@needs_export
def test_saved_model_cli_runs_the_signature(tmp_path):
    model = image_model(channels=3, activation="softmax")
    path = export_saved_model(model, str(tmp_path / "images"), class_names=["a", "b", "c"])
    images = np.full((1, 6, 5, 3), 200, dtype="uint8")
    np.save(tmp_path / "images.npy", images)
    outdir = tmp_path / "outputs"
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    completed = subprocess.run(
        [
            cli,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={tmp_path / 'images.npy'}",
            "--outdir",
            str(outdir),
        ],
        capture_output=True,
        text=True,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    probabilities = np.load(outdir / "probabilities.npy")
    expected = keras.ops.convert_to_numpy(model.predict(images.astype("float32"), verbose=0))
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-5)
    assert np.load(outdir / "label.npy", allow_pickle=True)[0].decode() in "abc"


@needs_export
def test_single_sigmoid_unit_serves_two_class_probabilities(tmp_path):
    import tensorflow as tf

    model = image_model(activation="sigmoid", units=1)
    path = export_saved_model(model, str(tmp_path / "binary"), class_names=["no", "yes"])
    images = np.full((3, 6, 5, 1), 9, dtype="uint8")
    served = tf.saved_model.load(path)
    result = served.serving_default(images=tf.constant(images))
    positive = keras.ops.convert_to_numpy(model.predict(images.astype("float32"), verbose=0))
    np.testing.assert_allclose(
        result["probabilities"].numpy(), np.concatenate([1 - positive, positive], -1), atol=1e-6
    )


@needs_export
def test_image_converter_settings_are_used_for_resizing_and_scaling(tmp_path):
    import keras_hub
    import tensorflow as tf

    model = image_model(channels=3)
    converter = keras_hub.layers.ImageConverter(
        image_size=(6, 5), scale=1 / 127.5, offset=-1.0, crop_to_aspect_ratio=True
    )
    path = export_saved_model(model, str(tmp_path / "converter"), preprocessor=converter)
    images = np.random.default_rng(1).integers(0, 256, size=(2, 24, 10, 3)).astype("uint8")
    served = tf.saved_model.load(path)
    result = served.serving_default(images=tf.constant(images))

    # A 6x5 aspect ratio in a 24x10 image: the central 12x10 crop.
    cropped = images[:, 6:18, :, :].astype("float32")
    prepared = tf.image.resize(cropped, (6, 5)).numpy() / 127.5 - 1.0
    expected = softmax(keras.ops.convert_to_numpy(model.predict(prepared, verbose=0)))
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, atol=1e-5)


class TrainingWrapper(keras.Model):
    """A training-time model that serves through a smaller one."""

    def __init__(self, served, **kwargs):
        super().__init__(**kwargs)
        self.served = served

    def call(self, inputs):
        return self.served(inputs) * 0.0

    def serving_model(self):
        return self.served


@needs_export
def test_training_models_export_only_their_serving_model(tmp_path):
    import tensorflow as tf

    serving = image_model()
    path = export_saved_model(TrainingWrapper(serving), str(tmp_path / "wrapped"))
    images = np.full((1, 6, 5, 1), 50, dtype="uint8")
    served = tf.saved_model.load(path)
    result = served.serving_default(images=tf.constant(images))
    expected = softmax(keras.ops.convert_to_numpy(serving.predict(images.astype("float32"))))
    np.testing.assert_allclose(result["probabilities"].numpy(), expected, atol=1e-5)


def distillation_model():
    teacher, student = frozen_teacher(width=32), classifier(4, "student")
    model = DistillationModel(teacher, student)
    model.compile("adam", sparse_cce())
    x, y = distillation_data(16)
    model.fit(x, y, epochs=1, verbose=0)
    return model, x


def domain_adaptation_model():
    x_source, y_source, x_target = domain_data()
    model = adaptation_model()
    one_step(model, x_source, y_source, x_target)
    return model, x_target


@needs_export
@pytest.mark.parametrize(
    "build", [distillation_model, domain_adaptation_model], ids=["distillation", "adaptation"]
)
def test_training_models_serve_their_serving_model_in_a_fresh_process(tmp_path, build):
    import tensorflow as tf

    model, x = build()
    assert isinstance(model, ServingModel)
    serving = model.serving_model()
    path = export_saved_model(model, str(tmp_path / "served"))
    # A model of other inputs than text or images serves them under its input's name.
    served = serve_in_fresh_process(path, {serving.inputs[0].name: x.tolist()}, imports="")

    expected = softmax(keras.ops.convert_to_numpy(model.predict(x, verbose=0)))
    np.testing.assert_allclose(served["probabilities"], expected, rtol=0, atol=1e-5)
    assert served["label"] == [str(i) for i in expected.argmax(axis=-1)]
    # Only the serving part is exported: no teacher, no domain head.
    assert len(tf.saved_model.load(path).variables) == len(serving.variables)
    assert len(serving.variables) < len(model.variables)


@needs_export
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"class_names": ["a", "b"]}, "has 2 names but the model predicts 3"),
        ({"outputs": "scores"}, "`outputs` must be one of"),
        ({"preprocessor": None, "image_scale": 2.0, "non_image": True}, "one image input"),
    ],
)
def test_bad_arguments_are_refused_with_the_fix(tmp_path, kwargs, message):
    model = image_model()
    if kwargs.pop("non_image", False):
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    with pytest.raises(ValueError, match=message):
        export_saved_model(model, str(tmp_path / "bad"), **kwargs)


@needs_export
def test_unknown_output_kind_asks_for_outputs_argument(tmp_path):
    model = keras.Sequential([keras.Input((6, 5, 1)), keras.layers.Flatten(), keras.layers.ReLU()])
    with pytest.raises(ValueError, match="outputs='logits'"):
        export_saved_model(model, str(tmp_path / "relu"))


@pytest.mark.skipif(EXPORTING, reason="checks the error on backends that cannot export")
def test_torch_backend_is_refused_with_the_way_out(tmp_path):
    with pytest.raises(RuntimeError, match="KERAS_BACKEND=tensorflow"):
        export_saved_model(image_model(), str(tmp_path / "torch"))
