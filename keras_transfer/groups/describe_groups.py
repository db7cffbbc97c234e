"""`kt.describe_groups`: a table of a model's layer groups."""

from __future__ import annotations

import keras

from keras_transfer.groups.layer_groups import layer_groups


def describe_groups(model: keras.Model, groups=None, print_fn=print) -> str:
    """Prints a table of a model's layer groups and returns it.

    Args:
        model: a built Keras model.
        groups: optional explicit grouping, as for `layer_groups`.
        print_fn: where the table goes; `None` prints nothing.

    Example:

    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    >>> table = kt.describe_groups(model, print_fn=None)
    >>> "trainable" in table
    True
    """
    rows = [("#", "group", "layers", "params", "trainable")]
    for index, group in enumerate(layer_groups(model, groups)):
        layers = ", ".join(layer.name for layer in group.layers)
        if len(layers) > 48:
            layers = layers[:45] + "..."
        rows.append(
            (
                str(index),
                group.name,
                layers,
                f"{group.num_params:,}",
                f"{group.num_trainable_params:,}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    table = "\n".join(lines)
    if print_fn is not None:
        print_fn(table)
    return table
