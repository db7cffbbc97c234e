"""Routing a tagged batch to its task's head, inside a compiled step.

The step is traced once for the stream, so the batch's task is a tensor, not
a Python value. Every head runs on the shared features and each task's loss
is gated by `tag == index`: a head's weights get exactly zero gradient from
other tasks' batches, the backbone the routed task's gradient alone. Gating
with `where` (not a multiplication) keeps a NaN from a head scored against
another task's placeholder labels out of the gradient.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from keras_transfer.multitask._batch_format import INPUTS, TASK, is_tagged, stream_tasks

# What reading the value of a traced tensor raises: JAX's tracer conversion
# error is a TypeError, TensorFlow's graph tensors raise NotImplementedError.
_SYMBOLIC_ERRORS = (TypeError, NotImplementedError, ValueError)


def check_batch(x, y, tasks) -> list[str]:
    """The stream's task names, after checking that the batch is a tagged one
    whose tasks all have heads."""
    if not is_tagged(x) or not isinstance(y, dict):
        raise ValueError(
            "MultiTaskModel trains and evaluates on task-tagged batches, "
            f"`({{'{INPUTS}': x, '{TASK}': tags}}, {{task: labels}})`, in which every "
            "batch comes from one task. Build them with `kt.task_batches({'movies': "
            "(x, y), 'tweets': (x, y)}, batch_size=32)`; to score one task on plain "
            "arrays use `model.task_model(task)`."
        )
    names = stream_tasks(y)
    unknown = [task for task in names if task not in tasks]
    if unknown:
        raise ValueError(
            f"The batch is tagged with tasks {unknown} that the model has no head for "
            f"(its tasks are {list(tasks)}). Build the stream from the model's tasks "
            "only, or add heads for these."
        )
    return names


def check_tagged_arrays(x, y) -> None:
    """Raises for tagged inputs given as arrays whose tags are not one task.

    `fit` and `evaluate` cut arrays into batches themselves (and `fit`
    shuffles them), which mixes tasks in a batch unless every example belongs
    to one task.
    """
    if not (is_tagged(x) and isinstance(x[TASK], np.ndarray) and isinstance(y, dict)):
        return
    check_tag_when_concrete(x, stream_tasks(y))


def batch_gates(x, names, tasks) -> dict:
    """Per head, a boolean scalar: whether this batch belongs to its task.

    Heads whose task is not in the stream get `False`.
    """
    tag = x[TASK][0]
    gates = {task: ops.equal(tag, index) for index, task in enumerate(names)}
    return {task: gates.get(task, ops.convert_to_tensor(False)) for task in tasks}


def check_tag_when_concrete(x, names) -> None:
    """Raises for a tag outside the stream's tasks, when the tag is a value.

    In a compiled step (TensorFlow graph, JAX jit) the tag is symbolic and an
    unknown one matches no task: the batch then trains no head.
    """
    try:
        tags = np.asarray(ops.convert_to_numpy(x[TASK]))
    except _SYMBOLIC_ERRORS:  # A symbolic tensor: no value to check while tracing.
        return
    found = sorted({int(tag) for tag in tags.reshape(-1)})
    if len(found) != 1 or not 0 <= found[0] < len(names):
        raise ValueError(
            f"The batch's task tags {found} are not one index into the stream's tasks "
            f"{names}. Each batch must come from one task, tagged with its index; "
            "`kt.task_batches` builds such batches."
        )


def gate_predictions(gate, predictions):
    """The head's outputs, cut from the gradient when the batch is not its task's."""
    return ops.where(gate, predictions, ops.stop_gradient(predictions))


def gate_value(gate, value):
    """`value` for the batch's own task, 0 for the others."""
    return ops.where(gate, value, ops.zeros_like(value))


def head_values(heads: dict) -> dict:
    """Copies of every head's variables (TensorFlow and PyTorch steps)."""
    return {task: [ops.copy(v.value) for v in head.weights] for task, head in heads.items()}


def restore_other_heads(heads: dict, gates: dict, saved: dict) -> None:
    """Puts back, in place, the variables of the heads the batch was not for."""
    for task, head in heads.items():
        for variable, value in zip(head.weights, saved[task]):
            variable.assign(ops.where(gates[task], variable.value, value))


def keep_other_heads_in_state(model, heads: dict, gates: dict, state, new_state):
    """JAX: `new_state` with the variables of other tasks' heads from `state`.

    A JAX step's state is `(trainable, non_trainable, optimizer, metrics)`
    values, in the order of the model's variable lists.
    """
    kept = [list(new_state[0]), list(new_state[1])]
    position = {}
    for part, variables in enumerate((model.trainable_variables, model.non_trainable_variables)):
        position.update({id(v): (part, index) for index, v in enumerate(variables)})
    for task, head in heads.items():
        for variable in head.weights:
            part, index = position[id(variable)]
            kept[part][index] = ops.where(gates[task], kept[part][index], state[part][index])
    return (kept[0], kept[1], *new_state[2:])
