"""The format of a task-tagged batch, shared by `task_batches` and the model.

A batch is `({"inputs": x, "task": tags}, {task_name: labels, ...})`:

- `x` is what the backbone takes (an array or a dict of arrays);
- `tags` is an int32 vector, one entry per example, all equal: the index of
  the batch's task in the sorted task names of the stream;
- the labels are a dict with an entry for every task of the stream: the
  batch's own labels under its task, zeros of the right shape and dtype under
  the others (`tf.data` needs one structure for every batch of a stream).

The model reads the stream's task names from the labels' keys when it traces
a step, so tags never depend on the order of the model's heads.
"""

from __future__ import annotations

INPUTS = "inputs"
TASK = "task"


def is_tagged(x) -> bool:
    """Whether `x` is the inputs part of a task-tagged batch."""
    return isinstance(x, dict) and set(x) == {INPUTS, TASK}


def stream_tasks(y) -> list[str]:
    """The stream's task names, in tag order, from a batch's labels."""
    return sorted(y)
