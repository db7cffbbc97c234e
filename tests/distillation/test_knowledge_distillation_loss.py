import keras
import numpy as np
import pytest

from keras_transfer.distillation import KnowledgeDistillationLoss


def softmax(logits):
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def reference(teacher_logits, student_logits, temperature):
    """Per sample: T^2 * KL(softmax(t / T) || softmax(s / T)), in float64."""
    p = softmax(np.asarray(teacher_logits, "float64") / temperature)
    q = softmax(np.asarray(student_logits, "float64") / temperature)
    return temperature**2 * np.sum(p * (np.log(p) - np.log(q)), axis=-1)


def numpy_loss(loss, teacher_logits, student_logits, sample_weight=None):
    value = loss(teacher_logits, student_logits, sample_weight=sample_weight)
    return keras.ops.convert_to_numpy(value)


def test_the_issue_case_is_the_batch_mean_of_t_squared_kl():
    teacher_logits = np.array([[2.0, -1.0], [0.5, 0.3]], "float32")
    student_logits = np.zeros((2, 2), "float32")
    value = numpy_loss(KnowledgeDistillationLoss(temperature=3.0), teacher_logits, student_logits)
    # 0.5017 = mean over the batch of 9 * KL; without T^2 it would be 0.0557.
    np.testing.assert_allclose(value, 0.5017469, rtol=1e-5)
    np.testing.assert_allclose(value, reference(teacher_logits, student_logits, 3.0).mean(), 1e-6)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 4.0, 20.0])
def test_matches_numpy_per_sample(temperature):
    rng = np.random.default_rng(1)
    teacher_logits = rng.normal(scale=3.0, size=(5, 7)).astype("float32")
    student_logits = rng.normal(scale=3.0, size=(5, 7)).astype("float32")
    loss = KnowledgeDistillationLoss(temperature=temperature, reduction=None)
    np.testing.assert_allclose(
        numpy_loss(loss, teacher_logits, student_logits),
        reference(teacher_logits, student_logits, temperature),
        rtol=1e-4,
        atol=1e-6,
    )


def test_t_squared_scaling_makes_high_temperatures_match_logits():
    # Hinton et al. 2.1: for large T, T^2 * KL tends to the squared logit
    # difference / (2 * classes) (zero-mean logits), whatever T is.
    rng = np.random.default_rng(2)
    teacher_logits = rng.normal(size=(4, 5))
    student_logits = rng.normal(size=(4, 5))
    teacher_logits -= teacher_logits.mean(axis=-1, keepdims=True)
    student_logits -= student_logits.mean(axis=-1, keepdims=True)
    limit = np.mean(np.sum((teacher_logits - student_logits) ** 2, axis=-1) / (2 * 5))
    for temperature in (50.0, 100.0):
        loss = KnowledgeDistillationLoss(temperature=temperature)
        value = numpy_loss(loss, teacher_logits.astype("float32"), student_logits.astype("float32"))
        np.testing.assert_allclose(value, limit, rtol=0.02)


def test_probabilities_give_the_same_loss_as_logits():
    rng = np.random.default_rng(3)
    teacher_logits = rng.normal(size=(6, 4)).astype("float32")
    student_logits = rng.normal(size=(6, 4)).astype("float32")
    from_logits = numpy_loss(KnowledgeDistillationLoss(2.0), teacher_logits, student_logits)
    from_probs = numpy_loss(
        KnowledgeDistillationLoss(2.0, from_logits=False),
        softmax(teacher_logits),
        softmax(student_logits),
    )
    np.testing.assert_allclose(from_probs, from_logits, rtol=1e-4)


def test_sample_weights_weigh_samples():
    rng = np.random.default_rng(4)
    teacher_logits = rng.normal(size=(4, 3)).astype("float32")
    student_logits = rng.normal(size=(4, 3)).astype("float32")
    weights = np.array([1.0, 0.0, 2.0, 0.5], "float32")
    value = numpy_loss(KnowledgeDistillationLoss(2.0), teacher_logits, student_logits, weights)
    expected = np.mean(reference(teacher_logits, student_logits, 2.0) * weights)
    np.testing.assert_allclose(value, expected, rtol=1e-5)


def test_bad_input_is_refused():
    for bad in (0.0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature` must be a finite number > 0"):
            KnowledgeDistillationLoss(temperature=bad)
    for bad in ("3", None, True):
        with pytest.raises(TypeError, match="temperature` must be a finite number > 0"):
            KnowledgeDistillationLoss(temperature=bad)
    with pytest.raises(ValueError, match="teacher gives 3 classes and the student 2"):
        KnowledgeDistillationLoss()(np.zeros((2, 3)), np.zeros((2, 2)))


def test_round_trips_through_a_saved_model(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3)])
    model.compile("sgd", loss=KnowledgeDistillationLoss(temperature=4.5, from_logits=False))
    model.save(tmp_path / "model.keras")
    loaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=True)
    loss = loaded.loss
    assert isinstance(loss, KnowledgeDistillationLoss)
    assert (loss.temperature, loss.from_logits) == (4.5, False)
