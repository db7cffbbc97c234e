import keras
import numpy as np
import pytest
import tensorflow as tf
from distillation.distillation_testing import classifier, data, frozen_teacher, sparse_cce

from keras_transfer.distillation import DistillationModel, cache_teacher_outputs


def distiller(student_weights=None, **kwargs):
    student = classifier(4, "student")
    if student_weights is not None:
        student.set_weights(student_weights)
    model = DistillationModel(frozen_teacher(), student, distillation_weight=0.6, **kwargs)
    model.compile(keras.optimizers.SGD(0.1), sparse_cce(), metrics=["accuracy"])
    return model


def poison(teacher):
    """NaN weights: any teacher pass after this shows in the losses."""
    teacher.set_weights([np.full(w.shape, np.nan, "float32") for w in teacher.weights])


@pytest.mark.parametrize("features", [False, True])
def test_cached_training_equals_live_training_and_never_runs_the_teacher(features):
    layers = {"teacher_layer": "hidden", "student_layer": "hidden"} if features else {}
    x, y = data()
    live = distiller(**layers)
    start = live.get_weights()
    live_history = live.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0).history
    cached = distiller(**layers)
    cached.set_weights(start)
    cached_x, targets = cache_teacher_outputs(cached, x, y, batch_size=10)
    expected_keys = {"labels", "teacher_outputs"} | ({"teacher_features"} if features else set())
    assert set(targets) == expected_keys
    poison(cached.teacher)
    history = cached.fit(cached_x, targets, batch_size=16, epochs=2, shuffle=False, verbose=0)
    for key, values in live_history.items():
        np.testing.assert_allclose(history.history[key], values, rtol=1e-5, err_msg=key)
    for got, expected in zip(cached.student.get_weights(), live.student.get_weights()):
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_pure_distillation_and_cached_validation_data():
    model = distiller()
    x, y = data()
    train = cache_teacher_outputs(model, x)
    assert set(train[1]) == {"teacher_outputs"}
    validation = cache_teacher_outputs(model, *data(16, seed=1))
    history = model.fit(*train, validation_data=validation, epochs=1, verbose=0).history
    assert sorted(history) == [
        "distillation_loss",
        "loss",
        "val_accuracy",
        "val_distillation_loss",
        "val_loss",
        "val_student_loss",
    ]


def test_a_deterministic_dataset_caches_like_arrays_and_shuffling_is_fine():
    model = distiller()
    x, y = data()
    # Same batches on both sides: float32 matmuls of other batch shapes may
    # differ in the last bit.
    from_arrays = cache_teacher_outputs(model, x, y, batch_size=7)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(7)
    from_dataset = cache_teacher_outputs(model, dataset)
    for got, expected in zip(keras.tree.flatten(from_dataset), keras.tree.flatten(from_arrays)):
        np.testing.assert_allclose(got, expected, rtol=1e-6)
    shuffled = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(48).batch(7)
    cached_x, targets = cache_teacher_outputs(model, shuffled)
    assert sorted(targets["labels"]) == sorted(y)


def test_a_random_pipeline_is_refused_unless_allowed():
    model = distiller()
    x, y = data()
    noisy = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    noisy = noisy.map(lambda inputs, labels: (inputs + tf.random.normal(tf.shape(inputs)), labels))
    with pytest.raises(ValueError, match="draws random numbers.*allow_random=True"):
        cache_teacher_outputs(model, noisy)
    cached_x, _ = cache_teacher_outputs(model, noisy, allow_random=True)
    assert cached_x.shape == x.shape


def test_random_augmentation_in_the_teacher_inputs_is_refused():
    augment = keras.Sequential([keras.layers.GaussianNoise(0.1), keras.layers.RandomFlip()])
    teacher = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    teacher.trainable = False
    student = keras.Sequential(
        [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(3)]
    )
    model = DistillationModel(teacher, student, teacher_inputs=augment)
    with pytest.raises(ValueError, match=r"random augmentation layers \['random_flip"):
        cache_teacher_outputs(model, np.zeros((4, 4, 4, 1), "float32"))


def test_the_teacher_key_is_left_out_of_the_cached_inputs():
    teacher = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    teacher.trainable = False
    model = DistillationModel(teacher, classifier(4, "student"), teacher_inputs="teacher")
    x, _ = data(8)
    teacher_x = np.ones((8, 2), "float32")
    cached_x, targets = cache_teacher_outputs(model, {"teacher": teacher_x, "student": x})
    np.testing.assert_array_equal(cached_x, x)
    np.testing.assert_allclose(targets["teacher_outputs"], teacher.predict(teacher_x, verbose=0))


def test_bad_input_is_refused():
    x, y = data(8)
    with pytest.raises(TypeError, match="takes the `kt.DistillationModel`"):
        cache_teacher_outputs(frozen_teacher(), x, y)
    model = distiller()
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    with pytest.raises(ValueError, match="carries its own labels"):
        cache_teacher_outputs(model, dataset, y)
    with pytest.raises(ValueError, match="batch_size` must be an integer >= 1"):
        cache_teacher_outputs(model, x, y, batch_size=0)
    empty = tf.data.Dataset.from_tensor_slices((x, y)).take(0).batch(4)
    with pytest.raises(ValueError, match="no data"):
        cache_teacher_outputs(model, empty)
    # Live cached features are needed once the model matches features.
    featured = distiller(teacher_layer="hidden", student_layer="hidden")
    with pytest.raises(ValueError, match="no features of layer 'hidden'"):
        featured.fit(*cache_teacher_outputs(model, x, y), verbose=0)
