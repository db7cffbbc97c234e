"""What a loaded TF SavedModel offers: its function, its variables, its dtype.

The pieces `kt.HubLayer` reads a SavedModel with, after `tf.saved_model.load`:
which function to call, whether it takes `training`, and which variables that
function reads (ordered as it first reads them, with TF-Hub's trainability).
"""

from __future__ import annotations

import inspect


def function_of(loaded, signature: str | None, handle: str):
    """The function to call: `loaded.signatures[signature]`, or `loaded.__call__`.

    Args:
        loaded: what `tf.saved_model.load` returned.
        signature: a signature name, or `None` for the `__call__` function.
        handle: where `loaded` came from, for error messages.

    Raises:
        ValueError: no such signature, or no `__call__` and no `signature`.
    """
    signatures = sorted(getattr(loaded, "signatures", {}) or {})
    if signature is not None:
        if signature not in signatures:
            raise ValueError(
                f"The SavedModel {handle!r} has no signature {signature!r}; "
                f"its signatures are {signatures}."
            )
        return loaded.signatures[signature]
    if not callable(loaded):
        raise ValueError(
            f"The SavedModel {handle!r} has no `__call__` function: pass `signature=` "
            f"one of {signatures}, with `output_key` or `signature_outputs_as_dict=True`."
        )
    return loaded.__call__


def accepts_training(function) -> bool:
    """Whether `function` takes a `training` argument (TF-Hub's reusable format)."""
    try:
        return "training" in inspect.signature(function).parameters
    except (TypeError, ValueError):
        return False


def saved_variables(loaded, functions) -> list[tuple]:
    """`(tf.Variable, trainable)` pairs for the variables `functions` read.

    Ordered as the functions first read them (input to output, for a network
    that reads each block's variables as it reaches it). Trainability follows
    TF-Hub's `trainable_variables` attribute when the SavedModel has one, else
    each variable's own `trainable`.
    """
    seen, variables = set(), []
    for function in functions:
        concrete = getattr(function, "concrete_functions", None) or [function]
        for concrete_function in concrete:
            for variable in concrete_function.variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
    declared = getattr(loaded, "trainable_variables", None)
    if declared is None:
        return [(variable, variable.trainable) for variable in variables]
    trainable = {id(variable) for variable in declared}
    return [(variable, id(variable) in trainable) for variable in variables]


def float_dtype(variables) -> str:
    """The dtype of the first floating-point variable (`"float32"` if none)."""
    for variable in variables:
        if variable.dtype.is_floating:
            return variable.dtype.name
    return "float32"
