import keras
import numpy as np
import pytest
from distillation.distillation_testing import (
    classifier,
    cross_entropy,
    data,
    frozen_teacher,
    kd_reference,
    numpy_of,
    sparse_cce,
)

import keras_transfer as kt
from keras_transfer.distillation import DistillationModel


def featured(student_width=4, **kwargs):
    model = DistillationModel(
        frozen_teacher(width=8),
        classifier(student_width, "student"),
        teacher_layer="hidden",
        student_layer="hidden",
        **kwargs,
    )
    model.compile(keras.optimizers.SGD(0.1), sparse_cce())
    return model


def test_loss_adds_the_weighted_mse_to_the_projected_teacher_features():
    model = featured(temperature=2.0, distillation_weight=0.4, feature_weight=0.3)
    x, y = data(8)
    loss = numpy_of(model.compute_loss(x, y, model(x), training=False))
    teacher, student = model.teacher, model.student
    teacher_features = np.tanh(
        x @ numpy_of(teacher.get_layer("hidden").kernel)
        + numpy_of(teacher.get_layer("hidden").bias)
    )
    student_features = np.tanh(
        x @ numpy_of(student.get_layer("hidden").kernel)
        + numpy_of(student.get_layer("hidden").bias)
    )
    kernel, bias = (numpy_of(w) for w in model.feature_projection.weights)
    matching = np.mean((teacher_features - (student_features @ kernel + bias)) ** 2)
    student_logits = numpy_of(student(x))
    expected = (
        0.4 * kd_reference(numpy_of(teacher(x)), student_logits, 2.0).mean()
        + 0.6 * cross_entropy(y, student_logits).mean()
        + 0.3 * matching
    )
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    np.testing.assert_allclose(numpy_of(model.feature_loss_tracker.result()), matching, 1e-5)


def test_the_projection_trains_and_is_saved_but_not_part_of_the_student(tmp_path):
    model = featured()
    assert model.feature_projection.kernel.shape == (4, 8)
    x, y = data()
    before = numpy_of(model.feature_projection.kernel)
    history = model.fit(x, y, epochs=3, batch_size=16, verbose=0).history
    assert history["feature_loss"][-1] < history["feature_loss"][0]
    assert not np.allclose(numpy_of(model.feature_projection.kernel), before)
    assert len(model.trainable_weights) == len(model.student.trainable_weights) + 2
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(
        numpy_of(loaded.feature_projection.kernel), numpy_of(model.feature_projection.kernel)
    )
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), 1e-6)


def test_equal_widths_need_no_projection():
    model = featured(student_width=8)
    assert model.feature_projection is None
    assert len(model.trainable_weights) == len(model.student.trainable_weights)


def conv_net(name, strides):
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, strides=strides, padding="same", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3),
        ],
        name=name,
    )


def test_bad_layers_are_refused():
    teacher = frozen_teacher()
    with pytest.raises(ValueError, match="student 'student' has no layer named 'nope'.*hidden"):
        DistillationModel(
            teacher, classifier(4, "student"), teacher_layer="hidden", student_layer="nope"
        )
    with pytest.raises(ValueError, match="teacher 'teacher' has no layer named 'nope'"):
        DistillationModel(
            teacher, classifier(4, "student"), teacher_layer="nope", student_layer="hidden"
        )
    with pytest.raises(ValueError, match="pass both `teacher_layer` and `student_layer`"):
        DistillationModel(teacher, classifier(4, "student"), teacher_layer="hidden")
    conv_teacher = conv_net("teacher", strides=1)
    conv_teacher.trainable = False
    with pytest.raises(ValueError, match=r"all but the last \(channel\) axis must agree"):
        DistillationModel(
            conv_teacher, conv_net("student", 2), teacher_layer="conv", student_layer="conv"
        )


class Subclassed(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.hidden = keras.layers.Dense(4, name="hidden")
        self.logits = keras.layers.Dense(3)

    def call(self, inputs):
        return self.logits(self.hidden(inputs))


def test_a_subclassed_student_trains_but_cannot_match_features():
    teacher = frozen_teacher()
    x, y = data()
    model = DistillationModel(teacher, Subclassed())
    model.compile("adam", sparse_cce())
    model.fit(x, y, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="needs a Functional or Sequential model"):
        DistillationModel(teacher, Subclassed(), teacher_layer="hidden", student_layer="hidden")


def test_the_projection_joins_the_students_head_group_and_trains_from_the_first_stage():
    model = featured()
    student_groups = [group.name for group in kt.layer_groups(model.student)]
    plan = kt.layer_groups(model)
    assert plan.names == student_groups  # no group of its own
    assert model.feature_projection in plan[-1].layers
    assert plan.group_index(model.feature_projection.kernel) == len(plan) - 1
    x, y = data()
    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, verbose=0)
    before = numpy_of(model.feature_projection.kernel)
    history = model.fit(x, y, epochs=1, batch_size=16, verbose=0, callbacks=[schedule])
    assert not np.allclose(numpy_of(model.feature_projection.kernel), before)
    head = model.student.layers[-1]
    expected = sum(int(np.prod(v.shape)) for v in head.weights + model.feature_projection.weights)
    assert history.history["trainable_params"] == [float(expected)]
