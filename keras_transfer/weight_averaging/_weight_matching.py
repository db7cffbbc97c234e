"""Whether models can be averaged weight for weight, and which weights pair up.

Weights pair up by position in `model.weights` (the order Keras saves them
in). Each pair must agree on its path, shape, dtype and on whether the
variable is trainable-capable: created as a trainable weight, whatever the
layer's current `trainable` flag (see `groups.layer_variables`). Freezing is
not compared, since the usual `start_model` of WiSE-FT (a linear probe) has a
frozen backbone that its fine-tuned version has not.

Paths are compared loosely in two ways that carry no meaning: layer names
that differ only in Keras' automatic numbering (`dense` / `dense_3`, as when
one builder function runs twice) count as the same, and so do paths where
one is the other with enclosing scopes removed (`sequential/dense/kernel` /
`dense/kernel`: the scope a variable is created under depends on how the
model was built).
"""

from __future__ import annotations

import re

import keras

from keras_transfer._keras_internals.layers import attached_state
from keras_transfer.groups.layer_variables import trainable_capable_weights

_AUTO_NUMBER = re.compile(r"_\d+$")


def model_list(models, caller: str) -> list:
    """`models` as a list of two or more, or a clear error."""
    if isinstance(models, keras.Model) or not isinstance(models, (list, tuple)):
        raise TypeError(
            f"`{caller}` takes a list of models, got {type(models).__name__}: pass "
            "`[model_a, model_b, ...]`."
        )
    if len(models) < 2:
        raise ValueError(
            f"`{caller}` needs at least two models, got {len(models)}: a soup of one "
            "model is that model itself. Fine-tune more copies of it (other seeds or "
            "learning rates) to make a soup, or use the one model as it is."
        )
    return list(models)


def check_models(models, names: list[str]) -> None:
    """Raises unless each of `models` is a built `keras.Model` with float weights."""
    for model, name in zip(models, names):
        if not isinstance(model, keras.Model):
            raise TypeError(f"`{name}` must be a `keras.Model`, got {type(model).__name__}.")
        if not model.built:
            raise ValueError(
                f"`{name}` ('{model.name}') is not built: call it on a batch or give it a "
                "`keras.Input` before averaging its weights."
            )
        if not any(is_float(variable) for variable in model.weights):
            raise ValueError(
                f"`{name}` ('{model.name}') has no floating-point weights: there is nothing "
                "to average."
            )
        _check_no_penalty(model, name)


def _check_no_penalty(model, name: str) -> None:
    # A penalty's anchors and sums are weights of the model it is attached to,
    # and averaging them would make no sense: they must go first.
    for attribute, state in attached_state(model).items():
        if hasattr(state, "remove"):
            raise ValueError(
                f"`{name}` ('{model.name}') still has a {type(state).__name__} penalty "
                f"attached, whose anchors are weights of the model: call "
                f"`model.{attribute}.remove()` (or `.remove()` on the penalty you created) "
                "when training is done, before averaging weights."
            )


def check_matching(models, names: list[str]) -> None:
    """Raises unless every model's weights pair up one to one with the first's.

    The message names the first weight that has no match.
    """
    reference, reference_name = weight_signature(models[0]), names[0]
    for model, name in zip(models[1:], names[1:]):
        mismatch = first_mismatch(reference, weight_signature(model))
        if mismatch is not None:
            raise ValueError(
                f"`{reference_name}` and `{name}` do not match weight for weight: "
                f"{_describe_mismatch(mismatch, reference_name, name)}. Weight averaging "
                "needs models of one architecture with the same trainable-capable weights: "
                "fine-tune copies of one model (`keras.models.clone_model` then "
                "`set_weights`), or build each with the same code."
            )


def first_mismatch(reference: list[tuple], other: list[tuple]):
    """The first position where two weight signatures differ, with both sides.

    Returns `None` when they match; otherwise `(index, reference_entry,
    other_entry)`, an entry `None` where that side has no weight left.
    """
    for index in range(max(len(reference), len(other))):
        left = reference[index] if index < len(reference) else None
        right = other[index] if index < len(other) else None
        if left is None or right is None or not _entries_match(left, right):
            return index, left, right
    return None


def float_flags(model: keras.Model) -> list[bool]:
    """For each of `model.weights`, whether it is averaged (float) or copied."""
    return [is_float(variable) for variable in model.weights]


def is_float(variable) -> bool:
    """Whether a variable holds floating-point values (averaged, not copied)."""
    return "float" in keras.backend.standardize_dtype(variable.dtype)


def weight_signature(model: keras.Model) -> list[tuple]:
    """`(path, shape, dtype, trainable-capable)` of each of `model.weights`."""
    capable = {id(variable) for variable in trainable_capable_weights(model)}
    return [
        (
            variable.path,
            tuple(int(dim) for dim in variable.shape),
            keras.backend.standardize_dtype(variable.dtype),
            id(variable) in capable,
        )
        for variable in model.weights
    ]


def _entries_match(left: tuple, right: tuple) -> bool:
    return paths_match(left[0], right[0]) and left[1:] == right[1:]


def paths_match(left: str, right: str) -> bool:
    """Whether two variable paths name the same weight (see the module docstring).

    >>> paths_match("sequential_2/dense_4/kernel", "dense/kernel")
    True
    >>> paths_match("dense/kernel", "dense/bias")
    False
    """
    shorter, longer = sorted((_normalized(left), _normalized(right)), key=len)
    return longer[len(longer) - len(shorter) :] == shorter


def _normalized(path: str) -> list[str]:
    return [_AUTO_NUMBER.sub("", part) for part in path.split("/")]


def _describe_mismatch(mismatch, left_name: str, right_name: str) -> str:
    index, left, right = mismatch
    if right is None:
        return f"weight {index}, `{left[0]}`, of `{left_name}` has no counterpart in `{right_name}`"
    if left is None:
        return (
            f"weight {index}, `{right[0]}`, of `{right_name}` has no counterpart in `{left_name}`"
        )
    return (
        f"weight {index} is `{left[0]}` {_describe_entry(left)} in `{left_name}` but "
        f"`{right[0]}` {_describe_entry(right)} in `{right_name}`"
    )


def _describe_entry(entry: tuple) -> str:
    _, shape, dtype, capable = entry
    return f"({shape}, {dtype}, {'trainable' if capable else 'non-trainable'})"
