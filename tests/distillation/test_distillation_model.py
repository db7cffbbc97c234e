import warnings

import keras
import numpy as np
import pytest
from distillation.distillation_testing import (
    classifier,
    cross_entropy,
    data,
    frozen_teacher,
    kd_reference,
    linear_classifier,
    numpy_of,
    softmax,
    sparse_cce,
)

import keras_transfer as kt
from keras_transfer.distillation import DistillationModel


@keras.saving.register_keras_serializable(package="keras_transfer_tests")
class WithSquares(keras.layers.Layer):
    """The teacher's own preprocessing: x -> [x, x^2]."""

    def call(self, inputs):
        return keras.ops.concatenate([inputs, keras.ops.square(inputs)], axis=-1)


def test_loss_is_the_weighted_sum_of_kd_and_hard_label_loss():
    teacher, student = frozen_teacher(), classifier(4, "student")
    model = DistillationModel(teacher, student, temperature=2.0, distillation_weight=0.3)
    model.compile("sgd", sparse_cce())
    x, y = data(8)
    loss = numpy_of(model.compute_loss(x, y, model(x), training=False))
    teacher_logits, student_logits = numpy_of(teacher(x)), numpy_of(student(x))
    distillation = kd_reference(teacher_logits, student_logits, 2.0).mean()
    hard = cross_entropy(y, student_logits).mean()
    np.testing.assert_allclose(loss, 0.3 * distillation + 0.7 * hard, rtol=1e-5)
    np.testing.assert_allclose(
        numpy_of(model.distillation_loss_tracker.result()), distillation, 1e-5
    )
    np.testing.assert_allclose(numpy_of(model.student_loss_tracker.result()), hard, 1e-5)


def test_one_fit_step_follows_the_numpy_gradient_of_the_kd_loss():
    # Linear student, distillation_weight=1: d(T^2 KL)/d logits = T (q - p) / batch.
    teacher, student = frozen_teacher(), linear_classifier()
    model = DistillationModel(teacher, student, temperature=3.0, distillation_weight=1.0)
    model.compile(keras.optimizers.SGD(0.5), sparse_cce())
    x, y = data(16)
    kernel, bias = (numpy_of(w) for w in student.weights)
    p = softmax(numpy_of(teacher(x)).astype("float64") / 3.0)
    q = softmax((x @ kernel + bias).astype("float64") / 3.0)
    grad_logits = 3.0 * (q - p) / len(x)
    model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    np.testing.assert_allclose(numpy_of(student.weights[0]), kernel - 0.5 * x.T @ grad_logits, 1e-4)
    np.testing.assert_allclose(numpy_of(student.weights[1]), bias - 0.5 * grad_logits.sum(0), 1e-4)


def test_distillation_weight_zero_trains_the_student_exactly_like_plain_fit():
    teacher, student = frozen_teacher(), classifier(4, "student")
    reference = classifier(4, "reference")
    reference.set_weights(student.get_weights())
    x, y = data()
    reference.compile(keras.optimizers.SGD(0.1), sparse_cce())
    reference.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    model = DistillationModel(teacher, student, distillation_weight=0.0)
    model.compile(keras.optimizers.SGD(0.1), sparse_cce())
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for got, expected in zip(student.get_weights(), reference.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert "distillation_loss" not in history.history


def test_fit_without_labels_is_pure_distillation():
    teacher, student = frozen_teacher(), classifier(4, "student")
    model = DistillationModel(teacher, student, distillation_weight=0.2)
    model.compile("adam", sparse_cce(), metrics=["accuracy"])
    x, _ = data()
    history = model.fit(x, epochs=2, batch_size=16, verbose=0).history
    assert sorted(history) == ["distillation_loss", "loss"]
    np.testing.assert_allclose(history["loss"], history["distillation_loss"], rtol=1e-6)
    assert history["loss"][1] < history["loss"][0]


def test_labels_with_a_loss_less_compile_are_refused():
    model = DistillationModel(frozen_teacher(), classifier(4, "student"))
    model.compile("adam")
    x, y = data(8)
    with pytest.raises(ValueError, match="compiled without a loss"):
        model.fit(x, y, verbose=0)


def test_teacher_is_frozen_with_a_warning_and_never_trained():
    teacher, student = classifier(8, "teacher"), classifier(4, "student")
    with pytest.warns(UserWarning, match="'teacher' had trainable weights"):
        model = DistillationModel(teacher, student)
    assert not teacher.trainable and not teacher.trainable_weights
    before = teacher.get_weights()
    model.compile("adam", sparse_cce(), metrics=["accuracy"])
    x, y = data()
    history = model.fit(x, y, epochs=1, batch_size=16, validation_data=(x, y), verbose=0)
    assert {"val_accuracy", "val_distillation_loss", "val_student_loss"} <= set(history.history)
    for got, expected in zip(teacher.get_weights(), before):
        np.testing.assert_array_equal(got, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        DistillationModel(teacher, classifier(4, "other"))


def test_freeze_schedule_unfreezes_the_student_only():
    teacher, student = frozen_teacher(), classifier(4, "student")
    model = DistillationModel(teacher, student)
    model.compile("adam", sparse_cce())
    assert [g.name for g in kt.layer_groups(model)] == [g.name for g in kt.layer_groups(student)]
    before = teacher.get_weights()
    x, y = data()
    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)
    history = model.fit(x, y, epochs=2, batch_size=16, callbacks=[schedule], verbose=0)
    assert history.history["trainable_params"][-1] == student.count_params()
    assert not teacher.trainable and not teacher.trainable_weights
    for got, expected in zip(teacher.get_weights(), before):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"temperature": 0}, ValueError, "temperature` must be a finite number > 0"),
        ({"temperature": -2.0}, ValueError, "temperature` must be a finite number > 0"),
        ({"temperature": float("inf")}, ValueError, "temperature` must be a finite number"),
        ({"temperature": True}, TypeError, "temperature` must be a finite number"),
        ({"distillation_weight": 1.5}, ValueError, r"distillation_weight` must be .* in \[0, 1\]"),
        ({"distillation_weight": -0.1}, ValueError, r"\(the weight of the distillation term"),
        ({"distillation_weight": float("nan")}, ValueError, "distillation_weight` must be"),
        ({"distillation_weight": "0.5"}, TypeError, "distillation_weight` must be a finite"),
        ({"feature_weight": -1}, ValueError, "feature_weight` must be a finite number >= 0"),
        ({"feature_weight": float("inf")}, ValueError, "feature_weight` must be a finite"),
        ({"alpha": 0.5}, ValueError, "Unrecognized keyword arguments.*alpha"),
        ({"teacher_inputs": 3}, TypeError, "teacher_inputs` must be None"),
        ({"student": classifier(4, "s", classes=5)}, ValueError, "outputs 3 classes.*5"),
        ({"student": "student"}, TypeError, "student must be a `keras.Model`"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    arguments = {"teacher": frozen_teacher(), "student": classifier(4, "student"), **kwargs}
    with pytest.raises(error, match=message):
        DistillationModel(**arguments)


def test_teacher_takes_its_own_preprocessing_of_the_batch(tmp_path):
    teacher, student = frozen_teacher(input_dim=12), classifier(4, "student")
    model = DistillationModel(
        teacher, student, distillation_weight=1.0, teacher_inputs=WithSquares()
    )
    model.compile("sgd", sparse_cce())
    x, y = data(8)
    loss = numpy_of(model.compute_loss(x, y, model(x), training=False))
    teacher_logits = numpy_of(teacher(np.concatenate([x, x**2], axis=-1)))
    np.testing.assert_allclose(
        loss, kd_reference(teacher_logits, numpy_of(student(x)), 3.0).mean(), 1e-5
    )
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert isinstance(loaded.teacher_inputs, WithSquares)
    np.testing.assert_allclose(
        numpy_of(loaded.compute_loss(x, y, loaded(x), training=False)),
        numpy_of(model.compute_loss(x, y, model(x), training=False)),
        rtol=1e-6,
    )


def test_teacher_and_student_read_different_keys_of_the_batch():
    teacher = keras.Sequential(
        [
            keras.Input((5,), dtype="int32"),
            keras.layers.Embedding(20, 4),
            keras.layers.GlobalAveragePooling1D(),
            keras.layers.Dense(3),
        ]
    )
    teacher.trainable = False
    student = classifier(4, "student")
    model = DistillationModel(teacher, student, teacher_inputs="token_ids")
    model.compile("adam", sparse_cce())
    x, y = data(16)
    token_ids = np.random.default_rng(0).integers(0, 20, size=(16, 5)).astype("int32")
    history = model.fit({"token_ids": token_ids, "features": x}, y, epochs=2, verbose=0)
    assert history.history["distillation_loss"][1] < history.history["distillation_loss"][0]
    np.testing.assert_allclose(model.predict(x, verbose=0), student.predict(x, verbose=0))
    with pytest.raises(ValueError, match="teacher_inputs='token_ids'.*dict batch"):
        model.compute_loss(x, y, model(x))


def test_save_and_load_round_trip_and_the_student_saved_alone(tmp_path):
    teacher, student = frozen_teacher(), classifier(4, "student")
    model = DistillationModel(
        teacher, student, temperature=5.0, distillation_weight=0.8, from_logits=True
    )
    model.compile("adam", sparse_cce(), metrics=["accuracy"])
    x, y = data()
    model.fit(x, y, epochs=1, verbose=0)
    model.save(tmp_path / "model.keras")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # A loaded teacher is frozen already.
        loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    assert (loaded.temperature, loaded.distillation_weight) == (5.0, 0.8)
    assert model.get_config()["distillation_weight"] == 0.8 and "alpha" not in model.get_config()
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), 1e-6)
    np.testing.assert_allclose(
        loaded.teacher.predict(x, verbose=0), teacher.predict(x, verbose=0), 1e-6
    )
    loaded.fit(x, y, epochs=1, verbose=0)  # Compiled again from the saved settings.
    assert model.serving_model() is student
    model.serving_model().save(tmp_path / "student.keras")
    alone = keras.models.load_model(tmp_path / "student.keras")
    assert len(alone.weights) == len(student.weights)
    np.testing.assert_allclose(alone.predict(x, verbose=0), model.predict(x, verbose=0), 1e-6)


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="SavedModel export on TF")
def test_export_serves_the_student_alone(tmp_path):
    import tensorflow as tf

    teacher, student = frozen_teacher(width=32), classifier(4, "student")
    model = DistillationModel(teacher, student)
    model.export(str(tmp_path / "served"), verbose=False)
    served = tf.saved_model.load(str(tmp_path / "served"))
    x, _ = data(4)
    np.testing.assert_allclose(served.serve(x).numpy(), student.predict(x, verbose=0), 1e-6)
    assert len(served.variables) == len(student.variables)


def test_from_config_takes_custom_objects():
    class Doubling(keras.layers.Layer):  # Unregistered, and not importable by name.
        def call(self, inputs):
            return inputs * 2

    student = classifier(4, "student")
    model = DistillationModel(
        frozen_teacher(), student, distillation_weight=0.4, teacher_inputs=Doubling()
    )
    config = model.get_config()
    with pytest.raises(TypeError, match="Doubling"):
        DistillationModel.from_config(config)
    rebuilt = DistillationModel.from_config(config, custom_objects={"Doubling": Doubling})
    assert isinstance(rebuilt.teacher_inputs, Doubling)
    assert rebuilt.distillation_weight == 0.4
    assert config == model.get_config()  # Left alone.


def test_a_teacher_inputs_layer_is_frozen_with_the_teacher():
    hook = keras.layers.Dense(12)
    hook.build((None, 6))
    student = classifier(4, "student")
    model = DistillationModel(frozen_teacher(input_dim=12), student, teacher_inputs=hook)
    assert not hook.trainable
    assert {id(v) for v in model.trainable_weights} == {id(v) for v in student.trainable_weights}


def test_an_all_one_class_batch_trains_with_finite_losses():
    model = DistillationModel(frozen_teacher(), classifier(4, "student"), temperature=4.0)
    model.compile("adam", sparse_cce())
    x, _ = data()
    history = model.fit(x, np.zeros(len(x), "int32"), batch_size=len(x), verbose=0)
    assert all(np.isfinite(values).all() for values in history.history.values())
    assert all(np.isfinite(w).all() for w in model.student.get_weights())
