"""Checks shared by the transferability scores (and the few-shot helpers).

Every score takes per-example arrays from the user: features or source
predictions, and integer class labels. The same mistakes come up for each
(a NaN in the features, labels that are strings or one-hot rows, arrays of
different lengths, a single class), so they are caught here once, with a
message that names the argument and the fix.
"""

from __future__ import annotations

import numpy as np


def check_features(features, name: str = "features") -> np.ndarray:
    """`features` as a finite float64 matrix `(examples, dimensions)`."""
    array = _as_array(features, name)
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == bool):
        raise TypeError(
            f"`{name}` must hold numbers, got an array of dtype {array.dtype}. Pass the "
            "backbone's outputs (e.g. `backbone.predict(x)`), not the raw inputs."
        )
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must be 2-D, (examples, dimensions); got shape {array.shape}. "
            "Pool or flatten each example's features first (e.g. a global average over "
            "the spatial axes: `features.mean(axis=(1, 2))`)."
        )
    array = array.astype(np.float64)
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"`{name}` holds NaN or infinite values in {bad_rows.size} example(s) (rows "
            f"{_preview(bad_rows)}). Drop or repair those examples first; a backbone that "
            "outputs NaN may need inputs in its expected range or float32 instead of float16."
        )
    return array


def check_labels(labels, name: str = "labels") -> np.ndarray:
    """`labels` as a 1-D int64 array of class ids (any integers)."""
    array = _as_array(labels, name)
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim == 2:
        raise ValueError(
            f"`{name}` must be 1-D integer class ids, got shape {array.shape}. For one-hot "
            f"or probability rows pass `{name}.argmax(axis=1)`."
        )
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D integer class ids, got shape {array.shape}.")
    if array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        raise TypeError(
            f"`{name}` must be integer class ids, got dtype {array.dtype}. Convert whole "
            f"numbers with `{name}.astype(int)`; map names or other values to ids with "
            f"`np.unique({name}, return_inverse=True)[1]`."
        )
    return array.astype(np.int64)


def check_classification(features, labels, features_name: str = "features"):
    """Checks both arrays and their agreement; returns `(features, class_index, classes)`.

    `class_index` numbers the classes present `0..C-1` in sorted order of
    `classes` (the original ids).
    """
    features = check_features(features, features_name)
    labels = check_labels(labels)
    check_same_length(features, labels, features_name)
    classes, class_index = np.unique(labels, return_inverse=True)
    check_classes(len(labels), len(classes))
    return features, class_index, classes


def check_same_length(first, labels, first_name: str) -> None:
    if len(first) != len(labels):
        raise ValueError(
            f"`{first_name}` has {len(first)} examples but `labels` has {len(labels)}: "
            "they must be the same examples in the same order. Compute both from the "
            "same data (without shuffling one of them)."
        )


def check_classes(examples: int, num_classes: int) -> None:
    if num_classes < 2:
        raise ValueError(
            "`labels` holds one class only: a score of how well features separate "
            "classes needs at least two. Include examples of every class."
        )
    if examples <= num_classes:
        raise ValueError(
            f"Got {examples} examples for {num_classes} classes: there must be more "
            "examples than classes (at least 2 per class, more for a stable score). "
            "Label more examples, or merge rare classes."
        )


def one_hot(class_index: np.ndarray, num_classes: int) -> np.ndarray:
    """`(examples, num_classes)` float64 one-hot rows of `0..num_classes-1` ids."""
    return np.eye(num_classes, dtype=np.float64)[class_index]


def _as_array(value, name: str) -> np.ndarray:
    if value is None:
        raise TypeError(f"`{name}` is None: pass an array.")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"`{name}` could not be read as an array ({error}).") from error
    if array.dtype == object:
        raise TypeError(
            f"`{name}` could not be read as a numeric array (rows of different lengths, or "
            "mixed types?). Pass a numpy array."
        )
    if array.size == 0:
        raise ValueError(f"`{name}` is empty: pass at least a few labelled examples per class.")
    return array


def _preview(indices: np.ndarray, count: int = 5) -> str:
    shown = ", ".join(str(i) for i in indices[:count])
    return shown + (", ..." if len(indices) > count else "")
