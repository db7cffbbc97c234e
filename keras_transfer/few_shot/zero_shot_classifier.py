"""`kt.ZeroShotClassifier`: classify texts by their similarity to class
descriptions, without a single labelled example."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import keras
import numpy as np

from keras_transfer._checks import check_integer, check_number
from keras_transfer.export import export_saved_model
from keras_transfer.features.pipeline import numpy_batches, predict_padded
from keras_transfer.few_shot.prototype_head import PrototypeHead
from keras_transfer.transferability.encoder_features import encoder_features

HEAD_NAME = "descriptions"


class ZeroShotClassifier:
    """Zero-shot text classification with a sentence encoder and class descriptions.

    Sentence encoders (the zoo's MiniLM, `kt.load_backbone("minilm_l6")`) map
    texts with similar meanings to nearby vectors. Describe each class in
    words ("a positive movie review"), and a text belongs to the class whose
    description it is most similar to (cosine similarity): no labelled data
    at all. Several descriptions per class (a prompt ensemble) are embedded
    and averaged (normalised), which is usually more robust than any one of
    them.

    The descriptions are embedded once, into a `kt.PrototypeHead` whose
    prototypes are the class embeddings; `model` is the Keras model
    `encoder inputs -> encoder -> PrototypeHead -> softmax` (save it with
    `model.save("zero_shot.keras")`, or fine-tune it once labels arrive,
    starting from the descriptions). `predict` and `export` take raw strings.

    Args:
        encoder: a Keras text encoder: a KerasHub text backbone (its tokens
            are averaged over the padding mask, as sentence encoders are
            used) or any model with one feature vector per text.
        class_descriptions: a dict from class names to a description or a
            list of descriptions (a prompt ensemble), e.g.
            `{"negative": "a bad movie", "positive": ["a great movie", "I loved it"]}`;
            or a list of descriptions, one per class, which then name the
            classes too.
        preprocessor: maps a batch of strings to the encoder's inputs, e.g.
            `kt.load_preprocessor("minilm_l6", sequence_length=128)`;
            `None` (default) when the encoder takes strings itself.
        scale: multiplier of the cosine similarities before the softmax (a
            temperature: it changes how confident the probabilities are, not
            which class wins). Defaults to `20.0`.
        batch_size: texts per encoder pass. Defaults to 32.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> vocabulary = {"good": 0, "great": 1, "bad": 2, "awful": 3}
    >>> def to_counts(texts):  # A toy "tokeniser": word counts.
    ...     return np.array([[t.split().count(w) for w in vocabulary] for t in texts], "float32")
    >>> encoder = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> kernel = np.array([[1, 0], [1, 0], [0, 1], [0, 1]], "float32")
    >>> encoder.set_weights([kernel, np.zeros(2, "float32")])
    >>> classifier = kt.ZeroShotClassifier(
    ...     encoder, {"positive": ["good", "great"], "negative": "bad"}, preprocessor=to_counts)
    >>> classifier.predict_labels(["a great great film", "awful"])
    ['positive', 'negative']
    """

    def __init__(
        self,
        encoder: keras.Model,
        class_descriptions,
        preprocessor: Callable | None = None,
        *,
        scale: float = 20.0,
        batch_size: int = 32,
    ):
        self.class_names, descriptions, description_classes = _read_descriptions(class_descriptions)
        if preprocessor is not None and not callable(preprocessor):
            raise TypeError(
                "`preprocessor` must map a batch of strings to the encoder's inputs (e.g. "
                f"`kt.load_preprocessor(name)`), got {type(preprocessor).__name__}."
            )
        self.preprocessor = preprocessor
        self.batch_size = check_integer(batch_size, "batch_size", "texts per pass", low=1)
        scale = check_number(scale, "scale", "logit multiplier", low=0, low_open=True)
        features = encoder_features(encoder)
        self._features = features
        embeddings = self._embed(features, descriptions)
        head = PrototypeHead(len(self.class_names), scale, name=HEAD_NAME)
        head.set_prototypes(embeddings, description_classes)
        probabilities = keras.layers.Activation("softmax", name="probabilities")(
            head(features.output)
        )
        self.model = keras.Model(features.input, probabilities, name="zero_shot_classifier")

    def predict(self, texts) -> np.ndarray:
        """`(texts, classes)` probabilities for a list or array of strings."""
        return self._embed(self.model, texts)

    def predict_labels(self, texts) -> list[str]:
        """The most similar class's name for each text."""
        return [self.class_names[index] for index in self.predict(texts).argmax(axis=1)]

    def export(self, path: str) -> str:
        """Writes a SavedModel whose `serving_default(text=...)` takes a string
        batch and returns `probabilities`, `class_id` and `label` (the class
        name); see `kt.export_saved_model` (TensorFlow or JAX backend)."""
        return export_saved_model(
            self.model,
            path,
            preprocessor=self.preprocessor,
            class_names=self.class_names,
            outputs="probabilities",
        )

    def _embed(self, model, texts) -> np.ndarray:
        texts = _check_texts(texts)
        outputs = []
        for batch, _ in numpy_batches(texts, None, self.batch_size):
            inputs = batch
            if self.preprocessor is not None:
                inputs = keras.tree.map_structure(np.asarray, self.preprocessor(list(batch)))
            outputs.append(np.asarray(predict_padded(model, inputs, self.batch_size)))
        return np.concatenate(outputs)

    def __repr__(self) -> str:
        return f"ZeroShotClassifier(classes={self.class_names})"


def _read_descriptions(class_descriptions):
    """(class names, flat descriptions, the class id of each description)."""
    if isinstance(class_descriptions, str) or not isinstance(
        class_descriptions, (Mapping, Sequence)
    ):
        raise TypeError(
            "`class_descriptions` must be a dict from class names to descriptions (a string "
            "or a list of strings each) or a list of descriptions, one per class; got "
            f"{type(class_descriptions).__name__}."
        )
    if not isinstance(class_descriptions, Mapping):
        class_descriptions = {description: description for description in class_descriptions}
    if len(class_descriptions) < 2:
        raise ValueError(
            f"`class_descriptions` describes {len(class_descriptions)} class(es); zero-shot "
            "classification needs at least two, e.g. {'negative': 'a bad movie', "
            "'positive': 'a good movie'}."
        )
    names, descriptions, classes = [], [], []
    for class_id, (name, texts) in enumerate(class_descriptions.items()):
        texts = [texts] if isinstance(texts, str) else texts
        if not isinstance(texts, Sequence) or not texts:
            raise ValueError(
                f"Class {name!r} has no description: give it a string or a non-empty list of "
                "strings."
            )
        for text in texts:
            if not isinstance(text, str) or not text.strip():
                raise TypeError(
                    f"The descriptions of class {name!r} must be non-empty strings, got {text!r}."
                )
        names.append(str(name))
        descriptions.extend(texts)
        classes.extend([class_id] * len(texts))
    return names, np.array(descriptions, dtype=object), np.array(classes)


def _check_texts(texts) -> np.ndarray:
    if isinstance(texts, str):
        raise TypeError("Pass a list of strings (for one text: `[text]`).")
    texts = np.asarray(texts, dtype=object)
    if texts.ndim != 1 or not len(texts):
        raise ValueError(f"Expected a non-empty list of strings, got shape {texts.shape}.")
    if not all(isinstance(text, str) for text in texts):
        raise TypeError("Every text must be a string.")
    return texts
