"""The one door to Keras internals.

Every use of Keras' private API in `keras_transfer` goes through a function of
this package, one function per need, each documented with what it relies on
and pinned by a test in `tests/_keras_internals/`. When a Keras release moves
something, one function here changes and its test says which. No other module
of the library imports `keras.src` or reads a private Keras attribute.

- `layers`: walking a layer's sublayers and the variables it could train.
- `graphs`: running a Functional model's graph node by node, and Keras masks.
- `training`: a model's training state (JAX's pending state, the initial epoch).
- `optimizers`: the optimizer's view of trainable variables and its update rule.
- `losses`: loss scaling under a distribution strategy.
- `compile`: the loss and metric objects `compile` builds from its arguments.
- `metrics`: whether a metric is better higher or lower.
- `distribute`: refusing what Keras' TensorFlow trainer cannot distribute yet.
- `saving`: Keras' safe mode.
- `data`: inspecting a `tf.data` pipeline.
"""
