"""The README's "Ten lines" run as written, offline and small."""

import pathlib
import re

import keras
import numpy as np
import tensorflow as tf

README = pathlib.Path(__file__).parents[1] / "README.md"


def ten_lines() -> str:
    text = README.read_text()
    section = text[text.index("## Ten lines") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_ten_lines_train_with_the_plan_they_describe():
    code = ten_lines()
    # No internet here, and a small image keeps it fast: the only two changes.
    offline = code.replace('weights="imagenet"', "weights=None").replace("224, 224", "32, 32")
    assert offline.count("weights=None") == 1 and offline.count("32, 32") == 1
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, size=(8, 32, 32, 3)).astype("float32")
    labels = rng.integers(0, 10, size=(8,))
    namespace = {"train_ds": tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)}
    exec(compile(offline, str(README), "exec"), namespace)
    model, optimizer = namespace["model"], namespace["optimizer"]
    plan = optimizer.group_plan
    assert plan is namespace["kt"].layer_groups(model)  # one plan, shared
    assert plan.names[-1] == model.layers[-1].name
    head, stem = model.layers[-1].kernel, plan[0].variables[0]
    top = len(plan) - 1
    assert optimizer.multiplier_for(head) == 1.0
    np.testing.assert_allclose(optimizer.multiplier_for(stem), 2.6**-top, rtol=1e-6)
    trainable = model.history.history["trainable_params"]
    assert trainable[0] < trainable[2] < trainable[4] == trainable[5]
    assert trainable[5] == sum(int(np.prod(v.shape)) for v in model.trainable_weights)
    assert keras.ops.all(keras.ops.isfinite(model.layers[-1].kernel))
