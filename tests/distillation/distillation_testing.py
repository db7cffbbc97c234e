"""Tiny teachers, students and data for the distillation tests."""

import keras
import numpy as np


def classifier(width=8, name="model", input_dim=6, classes=3):
    inputs = keras.Input((input_dim,), name=f"{name}_x")
    hidden = keras.layers.Dense(width, activation="tanh", name="hidden")(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(hidden), name=name)


def linear_classifier(name="student", input_dim=6, classes=3):
    return keras.Sequential(
        [keras.Input((input_dim,)), keras.layers.Dense(classes, name="logits")], name=name
    )


def frozen_teacher(width=8, input_dim=6, classes=3):
    teacher = classifier(width, "teacher", input_dim, classes)
    rng = np.random.default_rng(7)
    # Sharper logits than the default initialisation, so the teacher has views.
    teacher.set_weights([3 * rng.normal(size=w.shape).astype("float32") for w in teacher.weights])
    teacher.trainable = False
    return teacher


def data(samples=48, seed=0, input_dim=6):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(samples, input_dim)).astype("float32")
    y = x[:, :3].argmax(axis=1).astype("int32")
    return x, y


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def kd_reference(teacher_logits, student_logits, temperature):
    """Per sample T^2 * KL(softmax(t / T) || softmax(s / T))."""
    p = softmax(np.asarray(teacher_logits, "float64") / temperature)
    q = softmax(np.asarray(student_logits, "float64") / temperature)
    return temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def cross_entropy(labels, logits):
    probs = softmax(np.asarray(logits, "float64"))
    return -np.log(probs[np.arange(len(labels)), labels])


def numpy_of(value):
    return np.asarray(keras.ops.convert_to_numpy(value))


def sparse_cce():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
