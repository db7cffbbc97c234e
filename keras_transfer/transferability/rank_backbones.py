"""`kt.rank_backbones`: score candidate backbones on the user's labelled data
from one forward pass each, before fine-tuning any of them."""

from __future__ import annotations

import math
import os
import time
import warnings
from collections.abc import Callable, Mapping

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer.backbones import load_backbone
from keras_transfer.features.pipeline import is_dataset, numpy_batches, predict_padded
from keras_transfer.transferability.backbone_ranking import BackboneRanking, RankedBackbone
from keras_transfer.transferability.encoder_features import encoder_features
from keras_transfer.transferability.h_score import h_score
from keras_transfer.transferability.leep import leep
from keras_transfer.transferability.logme import logme
from keras_transfer.transferability.nce import nce

_METHODS: dict[str, Callable] = {
    "logme": logme,
    "h_score": h_score,
    "leep": leep,
    "nce": lambda outputs, labels: nce(outputs.argmax(axis=1), labels),
}
_CONTROLS = (None, "random")


def rank_backbones(
    candidates: Mapping[str, object],
    x,
    y=None,
    preprocessors=None,
    method: str = "logme",
    control: str | None = None,
    *,
    batch_size: int = 32,
    verbose: int | str = "auto",
) -> BackboneRanking:
    """Ranks pretrained backbones for a task by a transferability score.

    The first step of a transfer-learning recipe is choosing the base model;
    fine-tuning every candidate to find out is slow. This runs each frozen
    candidate once over the labelled data (in inference mode, batch by batch,
    with a progress bar: the same padded predict pass as `kt.FeatureCache`),
    scores its features with `method` and sorts the candidates, best first.

    Each output becomes one feature vector per example: a KerasHub text
    backbone's tokens are averaged over its padding mask (else its
    `"pooled_output"` is used), and a feature map or sequence
    (`(batch, ..., channels)`) is averaged over its middle axes (global
    average pooling).

    With `control="random"` each candidate is also scored with the same
    architecture randomly initialised (rebuilt with `from_config`): a
    pretrained backbone that scores no better than its random twin brings
    nothing from its pretraining to this data (negative transfer), and a
    warning says so.

    Args:
        candidates: maps a name to a backbone: a Keras model, or anything
            `kt.load_backbone` takes (a zoo name, a KerasHub preset, a
            `keras.applications` name, a folder).
        x: inputs (an array or a dict of arrays) with labels `y`, or a
            `tf.data.Dataset` of `(inputs, labels)` batches (iterated once per
            candidate, so it must yield the same order each time).
        y: `(examples,)` integer class labels; `None` with a dataset.
        preprocessors: `None` (default: inputs go into the backbones as they
            are), one callable for all candidates, or a mapping from
            candidate names to callables (e.g. `kt.load_preprocessor(name)`
            for raw strings or images), applied to each batch of inputs.
        method: `"logme"` (default), `"h_score"`, or for candidates that
            output source-class probabilities (a classifier with its
            softmax) `"leep"` or `"nce"`. See `kt.transferability`.
        control: `None` (default) or `"random"` to score randomly
            initialised twins too.
        batch_size: examples per forward pass over arrays. Defaults to 32.
        verbose: `0` silent, `1` or `"auto"` (default) a progress bar per
            candidate.

    Returns:
        A `kt.BackboneRanking`: rows sorted by score with seconds per
        candidate; `print` it for a table.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(64, 4)).astype("float32")
    >>> y = (x[:, 0] > 0).astype("int32")
    >>> def backbone(units):
    ...     return keras.Sequential([keras.Input((4,)), keras.layers.Dense(units)])
    >>> ranking = kt.rank_backbones({"wide": backbone(16), "narrow": backbone(2)}, x, y,
    ...                             verbose=0)
    >>> sorted(ranking.names)
    ['narrow', 'wide']
    """
    score = _check_method(method)
    _check_candidates(candidates)
    preprocessor_of = _preprocessor_lookup(preprocessors, candidates)
    if control not in _CONTROLS:
        raise ValueError(f"`control` must be one of {_CONTROLS}, got {control!r}.")
    batch_size = check_integer(batch_size, "batch_size", "examples per forward pass", low=1)
    _check_data(x, y)
    verbose = 1 if verbose == "auto" else verbose
    pass_ = _FeaturePass(x, y, batch_size, verbose)
    rows = []
    for name, candidate in candidates.items():
        start = time.perf_counter()
        backbone = _resolve(name, candidate)
        features, labels = pass_.run(name, backbone, preprocessor_of(name))
        value = _score(score, features, labels, name, method)
        seconds = time.perf_counter() - start
        random_score = None
        if control == "random":
            twin = _random_twin(name, backbone)
            twin_features, _ = pass_.run(f"{name} (random init)", twin, preprocessor_of(name))
            random_score = _score(score, twin_features, labels, name, method)
            _warn_if_negative_transfer(name, value, random_score, method)
        rows.append(RankedBackbone(name, value, seconds, random_score))
    rows.sort(key=lambda row: row.score, reverse=True)
    return BackboneRanking(method, tuple(rows))


class _FeaturePass:
    """One inference pass of a backbone over the data, pooled to `(examples, dims)`."""

    def __init__(self, x, y, batch_size: int, verbose: int):
        self.x, self.y = x, y
        self.batch_size = batch_size
        self.verbose = verbose
        self.labels = None

    def run(self, name: str, backbone, preprocessor):
        if self.verbose:
            print(f"{name}:")
        try:
            extractor = encoder_features(backbone)
        except (TypeError, ValueError) as error:
            raise type(error)(f"Candidate {name!r}: {error}") from error
        progress = keras.utils.Progbar(self._batches(), verbose=self.verbose, unit_name="batch")
        features, labels = [], []
        for inputs, batch_labels in numpy_batches(self.x, self.y, self.batch_size):
            if preprocessor is not None:
                inputs = keras.tree.map_structure(np.asarray, preprocessor(inputs))
            features.append(np.asarray(predict_padded(extractor, inputs, self.batch_size)))
            labels.append(np.asarray(batch_labels))
            progress.add(1)
        return np.concatenate(features), self._same_labels(np.concatenate(labels))

    def _batches(self):
        if is_dataset(self.x):
            return None
        return math.ceil(len(keras.tree.flatten(self.x)[0]) / self.batch_size)

    def _same_labels(self, labels):
        if self.labels is None:
            self.labels = labels
        elif labels.shape != self.labels.shape or np.any(labels != self.labels):
            raise ValueError(
                "The dataset yielded its examples in a different order for another candidate "
                "(reshuffled each pass?): the candidates would be scored on different data. "
                "Pass arrays, or a dataset shuffled with `reshuffle_each_iteration=False`."
            )
        return self.labels


def _score(score, features, labels, name, method) -> float:
    try:
        return score(features, labels)
    except (ValueError, TypeError) as error:
        raise type(error)(f"Scoring candidate {name!r} with {method!r}: {error}") from error


def _resolve(name: str, candidate) -> keras.Model:
    if isinstance(candidate, keras.Model):
        return candidate
    if isinstance(candidate, (str, os.PathLike)):
        return load_backbone(candidate)
    raise TypeError(
        f"Candidate {name!r} must be a Keras model or a name `kt.load_backbone` takes (a zoo "
        f"name, a preset, a folder); got {type(candidate).__name__}."
    )


def _random_twin(name: str, backbone: keras.Model) -> keras.Model:
    """The same architecture with freshly initialised weights."""
    try:
        return type(backbone).from_config(backbone.get_config())
    except (NotImplementedError, TypeError, ValueError) as error:
        raise ValueError(
            f"control='random' rebuilds each candidate from its config, but {name!r} "
            f"({type(backbone).__name__}) cannot be rebuilt ({error}). Give it `get_config` "
            "and `from_config`, or rank without the control."
        ) from error


def _warn_if_negative_transfer(name, value, random_score, method) -> None:
    if value <= random_score:
        warnings.warn(
            f"Candidate {name!r} scores {value:.4g} ({method}) with its pretrained weights but "
            f"{random_score:.4g} randomly initialised: its pretraining does not help on this "
            "data, a sign of negative transfer. Prefer another candidate (or train from "
            "scratch).",
            UserWarning,
            stacklevel=3,
        )


def _check_method(method):
    if method not in _METHODS:
        raise ValueError(f"`method` must be one of {sorted(_METHODS)}, got {method!r}.")
    return _METHODS[method]


def _check_candidates(candidates) -> None:
    if not isinstance(candidates, Mapping) or not candidates:
        raise TypeError(
            "`candidates` must be a non-empty dict from names to backbones, e.g. "
            "`{'lite0': 'efficientnet_lite0_imagenet', 'mine': my_model}`; got "
            f"{type(candidates).__name__}{' (empty)' if isinstance(candidates, Mapping) else ''}."
        )
    bad = [name for name in candidates if not isinstance(name, str)]
    if bad:
        raise TypeError(f"Candidate names must be strings, got {bad}.")


def _preprocessor_lookup(preprocessors, candidates) -> Callable:
    if preprocessors is None or callable(preprocessors):
        return lambda name: preprocessors
    if not isinstance(preprocessors, Mapping):
        raise TypeError(
            "`preprocessors` must be None, a callable, or a dict from candidate names to "
            f"callables; got {type(preprocessors).__name__}."
        )
    unknown = sorted(set(preprocessors) - set(candidates))
    if unknown:
        raise ValueError(
            f"`preprocessors` names {unknown}, which are not candidates ({sorted(candidates)})."
        )
    not_callable = [name for name, value in preprocessors.items() if not callable(value)]
    if not_callable:
        raise TypeError(f"The preprocessors of {not_callable} are not callable.")
    return preprocessors.get


def _check_data(x, y) -> None:
    if is_dataset(x):
        if y is not None:
            raise ValueError("With a dataset `x`, labels come from the dataset: leave `y` None.")
        return
    if y is None:
        raise ValueError(
            "`y` (the class labels of `x`) is missing; pass `rank_backbones(c, x, y)`."
        )
    examples = len(keras.tree.flatten(x)[0])
    if examples != len(y):
        raise ValueError(
            f"`x` has {examples} examples but `y` has {len(y)}: pass the labels of the same "
            "examples, in the same order."
        )
