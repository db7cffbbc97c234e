"""Every component trains under mixed precision, on every backend.

`mixed_bfloat16` is the CPU and TPU policy; `mixed_float16` (the GPU policy)
runs here on CPU too, which exercises the `LossScaleOptimizer` that Keras puts
around `DiscriminativeLR`. Under both, layers compute in 16 bits while the
weights and the optimizer's state stay float32, and training makes progress.
"""

import keras
import numpy as np
import pytest
from testing_utils import regression_data

import keras_transfer as kt
from keras_transfer.adaptation import DomainAdaptationModel, domain_pairs
from keras_transfer.distillation import DistillationModel

POLICIES = ["mixed_bfloat16", "mixed_float16"]


def float_dtypes(variables) -> set:
    return {str(v.dtype) for v in variables if "int" not in str(v.dtype)}


def assert_trained_in_mixed_precision(model, history, policy, hidden_layer):
    losses = history.history["loss"]
    assert np.all(np.isfinite(losses)), losses
    assert losses[-1] < 0.9 * losses[0], losses
    assert float_dtypes(model.weights) == {"float32"}
    assert float_dtypes(model.optimizer.variables) == {"float32"}
    assert hidden_layer.compute_dtype == keras.DTypePolicy(policy).compute_dtype


def dense_model():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(16, activation="tanh", name="a")(inputs)
    hidden = keras.layers.Dense(16, activation="tanh", name="b")(hidden)
    # Float32 outputs, as Keras' mixed-precision guide recommends.
    outputs = keras.layers.Dense(1, name="head", dtype="float32")(hidden)
    return keras.Model(inputs, outputs)


@pytest.mark.parametrize("policy", POLICIES)
def test_freeze_schedule_and_discriminative_lr(policy):
    keras.config.set_dtype_policy(policy)
    model = dense_model()
    optimizer = kt.DiscriminativeLR(keras.optimizers.AdamW(0.05, weight_decay=0.01), model)
    model.compile(optimizer=optimizer, loss="mse")
    if policy == "mixed_float16":
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        assert model.optimizer.inner_optimizer is optimizer
    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)
    x, y = regression_data(64)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[schedule])
    assert history.history["trainable_params"] == [17.0, 401.0]
    assert_trained_in_mixed_precision(model, history, policy, model.get_layer("a"))
    assert optimizer.multiplier_for(model.get_layer("a").kernel) == pytest.approx(2.6**-2)


def classifier(width, name):
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(width, activation="tanh", name=f"{name}_hidden")(inputs)
    outputs = keras.layers.Dense(3, name=f"{name}_logits", dtype="float32")(hidden)
    return keras.Model(inputs, outputs, name=name)


def classification_data(samples=64):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(samples, 6)).astype("float32")
    return x, x[:, :3].argmax(axis=1).astype("int32")


@pytest.mark.parametrize("policy", POLICIES)
def test_distillation_model(policy):
    keras.config.set_dtype_policy(policy)
    teacher = classifier(16, "teacher")
    teacher.trainable = False
    x, y = classification_data()
    student = classifier(8, "student")
    model = DistillationModel(
        teacher,
        student,
        temperature=2.0,
        distillation_weight=0.7,
        teacher_layer="teacher_hidden",
        student_layer="student_hidden",
    )
    model.compile(
        optimizer=kt.DiscriminativeLR(keras.optimizers.Adam(0.02), student, decay=2.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    history = model.fit(x, y, batch_size=16, epochs=3, verbose=0)
    assert_trained_in_mixed_precision(model, history, policy, student.get_layer("student_hidden"))
    for key in ("distillation_loss", "student_loss", "feature_loss"):
        assert np.all(np.isfinite(history.history[key])), key


@pytest.mark.parametrize("policy", POLICIES)
def test_domain_adaptation_model(policy):
    keras.config.set_dtype_policy(policy)
    rng = np.random.default_rng(1)
    x_source, y_source = classification_data()
    x_target = (rng.normal(size=x_source.shape) + 1.0).astype("float32")
    model = DomainAdaptationModel(
        keras.Sequential([keras.layers.Dense(8, activation="tanh")], name="features"),
        keras.layers.Dense(3, dtype="float32", name="task"),
        adaptation_weight=0.3,
    )
    # Built before fit: TensorFlow builds it only in the first step, after
    # FreezeSchedule has looked for its layer groups.
    model({"source": x_source[:1], "target": x_target[:1]})
    model.compile(
        optimizer=kt.DiscriminativeLR(keras.optimizers.Adam(0.03), model, decay=2.0),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    pairs = domain_pairs((x_source, y_source), x_target, batch_size=16, seed=0)
    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)
    history = model.fit(pairs, epochs=2, shuffle=False, verbose=0, callbacks=[schedule])
    assert_trained_in_mixed_precision(model, history, policy, model.feature_extractor.layers[0])
    assert np.all(np.isfinite(history.history["domain_loss"]))
