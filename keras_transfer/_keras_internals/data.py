"""Data: inspecting a `tf.data` pipeline."""

from __future__ import annotations


def dataset_op_names(dataset) -> list[str]:
    """The names of the TensorFlow ops that build `dataset`, its functions' included.

    The ops of the pipeline's graph and of every function in its library (the
    bodies of `map`, `filter` and the like), in graph order, repeats kept. Relies
    on `tf.data.Dataset._as_serialized_graph()`, which serializes the pipeline
    as a `GraphDef` (the form `tf.data` service and snapshots use).
    """
    import tensorflow as tf

    graph = tf.compat.v1.GraphDef()
    graph.ParseFromString(dataset._as_serialized_graph().numpy())
    names = [node.op for node in graph.node]
    for function in graph.library.function:
        names.extend(node.op for node in function.node_def)
    return names
