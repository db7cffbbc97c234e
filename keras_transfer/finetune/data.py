"""Labelled data from files: a folder of class sub-folders of images, or a CSV of text and labels.

Images are read into memory, resized and scaled by the same TensorFlow
function that the exported SavedModel runs, so training and serving see the
same pixels.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass

import numpy as np

from keras_transfer._checks import check_number

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")


@dataclass
class LabelledData:
    """Inputs, integer labels and the class names they index: what `kt.finetune` trains on.

    Build one from arrays you have, or read one with `kt.load_labelled_data`.

    Args:
        inputs: an array of strings (text) or of uint8 images of one size, or
            a list of image file paths.
        labels: int32 class indices.
        class_names: the names of the classes, sorted.
        kind: `"text"` or `"image"`.

    Example:

    >>> import numpy as np
    >>> import keras_transfer as kt
    >>> data = kt.LabelledData(
    ...     np.array(["a fine film", "dull"], dtype=object),
    ...     np.array([1, 0], dtype="int32"),
    ...     ["negative", "positive"],
    ...     "text",
    ... )
    >>> data.class_names[data.labels[0]]
    'positive'
    """

    inputs: object
    labels: np.ndarray
    class_names: list[str]
    kind: str


def load_labelled_data(path: str) -> LabelledData:
    """Reads labelled data for `kt.finetune` from a folder or a CSV file.

    A folder holds one sub-folder of images per class (`cats/1.jpg`,
    `dogs/7.png`, ...): the images are kept as file paths, the class names are
    the sub-folders' names, sorted. A `.csv` file has a header row with a
    `text` and a `label` column: the class names are the labels, sorted.

    Args:
        path: the folder or the `.csv` file.

    Returns:
        A `kt.LabelledData`.

    Example:

    >>> import pathlib, tempfile
    >>> import keras_transfer as kt
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "reviews.csv"
    >>> _ = path.write_text("text,label\\ngreat,pos\\nawful,neg\\n")
    >>> data = kt.load_labelled_data(str(path))
    >>> data.kind, data.class_names, data.labels.tolist()
    ('text', ['neg', 'pos'], [1, 0])
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"Training data {path!r} does not exist.")
    if os.path.isdir(path):
        return load_image_folder(path)
    if path.lower().endswith(".csv"):
        return load_text_csv(path)
    raise ValueError(
        f"Training data {path!r} is neither a folder of class sub-folders of images "
        "nor a .csv file with `text` and `label` columns."
    )


def load_image_folder(folder: str) -> LabelledData:
    """Image paths and labels from `folder/<class name>/<image file>`."""
    class_names = sorted(
        name for name in os.listdir(folder) if os.path.isdir(os.path.join(folder, name))
    )
    paths, labels = [], []
    for index, name in enumerate(class_names):
        class_folder = os.path.join(folder, name)
        files = sorted(f for f in os.listdir(class_folder) if f.lower().endswith(IMAGE_EXTENSIONS))
        paths += [os.path.join(class_folder, f) for f in files]
        labels += [index] * len(files)
    kept = [name for index, name in enumerate(class_names) if index in set(labels)]
    _check_classes(kept, f"image folder {folder!r} (one sub-folder of images per class)")
    return LabelledData(paths, np.asarray(labels, "int32"), class_names, "image")


def read_images(paths: list[str], image_spec) -> np.ndarray:
    """Decodes, resizes and scales image files into a float32 array."""
    import tensorflow as tf

    from keras_transfer.export.serving_inputs import prepare_images

    images = []
    for path in paths:
        try:
            raw = tf.io.decode_image(
                tf.io.read_file(path), channels=image_spec.channels, expand_animations=False
            )
        except (tf.errors.InvalidArgumentError, tf.errors.NotFoundError) as error:
            message = str(error).splitlines()[0]
            raise ValueError(f"Cannot read image {path!r}: {message}") from None
        images.append(prepare_images(raw[None], image_spec)[0].numpy())
    return np.stack(images)


def load_text_csv(path: str, text_column: str = "text", label_column: str = "label"):
    """Texts and labels from a CSV file with a header row."""
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        columns = reader.fieldnames or []
        missing = [c for c in (text_column, label_column) if c not in columns]
        if missing:
            raise ValueError(
                f"CSV file {path!r} has columns {columns} but needs {missing}: "
                f"a header row with `{text_column}` and `{label_column}`."
            )
        # line_num: where the row ends in the file (quoted text may span lines).
        rows = [
            (row[text_column] or "", row[label_column] or "", reader.line_num) for row in reader
        ]
    _check_no_empty_fields(rows, path, text_column, label_column)
    class_names = sorted({label for _, label, _ in rows})
    _check_classes(class_names, f"CSV file {path!r}")
    index = {name: i for i, name in enumerate(class_names)}
    texts = np.asarray([text for text, _, _ in rows], dtype=object)
    labels = np.asarray([index[label] for _, label, _ in rows], "int32")
    return LabelledData(texts, labels, class_names, "text")


def _check_no_empty_fields(rows, path: str, text_column: str, label_column: str) -> None:
    for column, index in ((label_column, 1), (text_column, 0)):
        empty = [row[2] for row in rows if not row[index].strip()]
        if empty:
            shown = ", ".join(map(str, empty[:5])) + (", ..." if len(empty) > 5 else "")
            raise ValueError(
                f"CSV file {path!r} has an empty `{column}` on {len(empty)} line(s) "
                f"({shown}). Fill them in or delete those lines."
            )


def _check_classes(class_names, where: str) -> None:
    if len(class_names) < 2:
        found = f"only {class_names}" if class_names else "no labelled examples"
        raise ValueError(f"Found {found} in the {where}; a classifier needs at least 2 classes.")


def split_validation(labels: np.ndarray, fraction: float, seed: int):
    """Stratified train / validation indices: `fraction` of each class (at
    least one example) is held out, when the class has two or more."""
    check_number(
        fraction,
        "validation_fraction",
        "the share of each class held out for validation",
        low=0,
        high=1,
        low_open=True,
        high_open=True,
    )
    rng = np.random.default_rng(seed)
    train, validation = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        held_out = max(1, round(fraction * len(members))) if len(members) > 1 else 0
        validation += list(members[:held_out])
        train += list(members[held_out:])
    return np.sort(np.asarray(train, "int64")), np.sort(np.asarray(validation, "int64"))
