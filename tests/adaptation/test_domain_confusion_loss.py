import keras
import numpy as np
import pytest
from keras import ops

from keras_transfer.adaptation import DomainConfusionLoss
from keras_transfer.adaptation.domain_confusion_loss import domain_accuracy


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


LABELS = np.array([0, 0, 0, 1, 1], dtype="float32")
LOGITS = np.array([[-2.0], [0.5], [-0.1], [3.0], [-1.0]], dtype="float32")


@pytest.mark.parametrize("mode", ["adversarial", "confusion"])
def test_call_is_the_classifier_cross_entropy(mode):
    p = sigmoid(LOGITS[:, 0].astype("float64"))
    expected = -np.mean(LABELS * np.log(p) + (1 - LABELS) * np.log(1 - p))
    value = float(ops.convert_to_numpy(DomainConfusionLoss(mode)(LABELS, LOGITS)))
    assert value == pytest.approx(expected, rel=1e-5)
    flat = float(ops.convert_to_numpy(DomainConfusionLoss(mode)(LABELS, LOGITS[:, 0])))
    assert flat == pytest.approx(expected, rel=1e-5)


def test_confusion_is_cross_entropy_to_uniform():
    p = sigmoid(LOGITS[:, 0].astype("float64"))
    expected = -np.mean(0.5 * np.log(p) + 0.5 * np.log(1 - p))
    value = float(ops.convert_to_numpy(DomainConfusionLoss("confusion").confusion(LOGITS)))
    assert value == pytest.approx(expected, rel=1e-5)
    huge = DomainConfusionLoss().confusion(np.array([[200.0], [-200.0]], "float32"))
    assert float(ops.convert_to_numpy(huge)) == pytest.approx(100.0, rel=1e-4)


def test_domain_accuracy():
    accuracy = float(ops.convert_to_numpy(domain_accuracy(LABELS, LOGITS)))
    assert accuracy == pytest.approx(3 / 5)


def test_bad_mode_and_shapes_are_refused():
    with pytest.raises(ValueError, match="adversarial"):
        DomainConfusionLoss("dann")
    with pytest.raises(ValueError, match="one logit per example"):
        DomainConfusionLoss()(LABELS, np.zeros((5, 2), "float32"))


def test_config_round_trip():
    loss = DomainConfusionLoss("confusion", name="dc")
    rebuilt = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(loss), safe_mode=True
    )
    assert isinstance(rebuilt, DomainConfusionLoss)
    assert rebuilt.mode == "confusion" and rebuilt.name == "dc"
