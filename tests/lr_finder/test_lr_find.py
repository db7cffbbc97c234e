import keras
import numpy as np
import pytest
from testing_utils import dense_model, regression_data, values

import keras_transfer as kt
from keras_transfer.lr_finder import LRFinderResult, lr_find
from keras_transfer.schedules import OneCycle

SAMPLES = 16


def linear_problem():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(SAMPLES, 3)).astype("float32")
    y = (x @ np.array([[1.0], [-2.0], [0.5]]) + 0.3).astype("float32")
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1, name="dense")])
    model.set_weights([np.full((3, 1), 0.1, "float32"), np.zeros(1, "float32")])
    return model, x, y


def reference_curve(weights, x, y, rates, beta, kernel_scale=1.0):
    """Full-batch SGD on the mean squared error in float64, and fastai's smoothing."""
    x, y = x.astype("float64"), y.astype("float64")
    kernel, bias = (w.astype("float64") for w in weights)
    average, curve = 0.0, []
    for step, rate in enumerate(rates):
        residual = x @ kernel + bias - y
        loss = np.mean(residual**2)
        kernel = kernel - kernel_scale * rate * (2 / len(x)) * x.T @ residual
        bias = bias - rate * (2 / len(x)) * residual.sum(axis=0)
        average = beta * average + (1 - beta) * loss
        curve.append(average / (1 - beta ** (step + 1)))
    return np.array(curve)


@pytest.mark.parametrize(
    "make_optimizer, kernel_scale",
    [
        (lambda model: keras.optimizers.SGD(0.01), 1.0),
        (lambda model: keras.optimizers.SGD(OneCycle(0.1, total_steps=50)), 1.0),
        (
            lambda model: kt.DiscriminativeLR(
                keras.optimizers.SGD(0.01), model, multipliers={"kernel": 0.5}
            ),
            0.5,
        ),
    ],
    ids=["sgd", "sgd_with_a_schedule", "discriminative"],
)
def test_curve_follows_a_numpy_range_test(make_optimizer, kernel_scale):
    model, x, y = linear_problem()
    model.compile(make_optimizer(model), "mse")
    model.fit(x, y, batch_size=SAMPLES, verbose=0)  # a train step traced with its rate
    weights = model.get_weights()
    result = lr_find(model, (x, y), start_lr=1e-3, end_lr=0.8, num_steps=30, batch_size=SAMPLES)
    rates = np.geomspace(1e-3, 0.8, 30)
    assert len(result.learning_rates) == 30
    np.testing.assert_allclose(result.learning_rates, rates)
    np.testing.assert_allclose(np.diff(np.log(result.learning_rates)), np.log(800) / 29)
    expected = reference_curve(weights, x, y, rates, beta=0.98, kernel_scale=kernel_scale)
    np.testing.assert_allclose(result.losses, expected, rtol=1e-4)


def test_stops_once_the_loss_exceeds_four_times_the_best():
    model, x, y = linear_problem()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    result = lr_find(model, (x, y), start_lr=1e-3, end_lr=100.0, num_steps=40, batch_size=16)
    assert 10 < len(result.losses) < 40
    assert result.losses[-1] > 4 * result.losses.min()
    assert np.all(result.losses[:-1] <= 4 * np.minimum.accumulate(result.losses[:-1]))


def test_suggestion_lies_on_the_descent():
    model = dense_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    # One full batch: no batch-to-batch noise in the first losses.
    data = regression_data(64)
    result = lr_find(model, data, start_lr=1e-5, end_lr=10.0, num_steps=40, batch_size=64)
    assert result.method == "valley"
    assert 1e-5 <= result.suggestion <= 10.0
    at_suggestion = result.losses[np.argmin(np.abs(result.learning_rates - result.suggestion))]
    assert at_suggestion < result.losses[0]


def assert_same(first, second):
    assert len(first) == len(second)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def state(model):
    return values(model.variables), values(model.optimizer.variables)


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda model: keras.optimizers.Adam(0.01),
        lambda model: keras.optimizers.SGD(OneCycle(0.05, total_steps=20), momentum=0.9),
        lambda model: kt.DiscriminativeLR(keras.optimizers.Adam(OneCycle(0.01, 20)), model),
    ],
    ids=["adam", "momentum_with_a_schedule", "discriminative_adam_with_a_schedule"],
)
def test_model_and_optimizer_are_put_back_exactly(make_optimizer):
    x, y = regression_data(32)
    model = dense_model(with_batchnorm=True)  # moving statistics are state too
    model.compile(make_optimizer(model), "mse")
    for _ in range(2):
        model.train_on_batch(x, y)
    before = state(model)
    rate = float(keras.ops.convert_to_numpy(model.optimizer.learning_rate))
    lr_find(model, (x, y), num_steps=8, batch_size=8)
    after = state(model)
    assert_same(before[0], after[0])
    assert_same(before[1], after[1])
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == rate


@pytest.mark.parametrize("schedule", [False, True], ids=["constant_rate", "schedule"])
def test_training_afterwards_is_as_if_it_never_ran(schedule):
    x, y = regression_data(32)
    trained = []
    for run_lr_find in (True, False):
        keras.utils.set_random_seed(0)
        model = dense_model(with_batchnorm=True)
        rate = OneCycle(0.05, total_steps=6) if schedule else 0.01
        model.compile(keras.optimizers.Adam(rate), "mse")  # not built yet
        if run_lr_find:
            lr_find(model, (x, y), num_steps=8, batch_size=8)
        model.fit(x, y, batch_size=32, epochs=3, shuffle=False, verbose=0)
        trained.append(state(model))
    assert_same(trained[0][0], trained[1][0])
    assert_same(trained[0][1], trained[1][1])


def test_mixed_precision_sets_the_rate_inside_loss_scaling():
    keras.config.set_dtype_policy("mixed_float16")
    model = dense_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    x, y = regression_data(32)
    model.train_on_batch(x, y)
    before = state(model)
    result = lr_find(model, (x, y), start_lr=1e-3, end_lr=0.3, num_steps=12, batch_size=32)
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert result.losses[-1] < result.losses[0]
    after = state(model)
    assert_same(before[0], after[0])
    assert_same(before[1], after[1])


def test_takes_a_tf_data_dataset():
    import tensorflow as tf

    x, y = regression_data(32)
    model = dense_model()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)  # four batches a pass
    result = lr_find(model, dataset, num_steps=10, divergence_factor=None)
    assert len(result.losses) == 10
    np.testing.assert_allclose(result.learning_rates, np.geomspace(1e-7, 10.0, 10))


def test_plot_draws_the_curve_on_a_log_axis_and_marks_the_suggestion():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = np.geomspace(1e-5, 1.0, 30)
    result = LRFinderResult(rates, 1 + np.cos(np.linspace(0, 3, 30)), suggestion=1e-3)
    ax = result.plot()
    assert isinstance(ax, matplotlib.axes.Axes)
    assert ax.get_xscale() == "log"
    curve, marker = ax.get_lines()
    np.testing.assert_array_equal(curve.get_xdata(), rates)
    assert marker.get_xdata()[0] == 1e-3
    _, given = plt.subplots()
    assert result.plot(ax=given) is given
    plt.close("all")


def synthetic_curve():
    """Flat, a long fall with one steep step, then a blow-up: 40 points."""
    rates = np.geomspace(1e-6, 1.0, 40)
    drops = np.full(23, 0.05)
    drops[12] = 0.3  # from point 20 to 21
    fall = 1.95 - np.concatenate([[0.0], np.cumsum(drops)])  # points 8..31, down to 0.55
    losses = np.concatenate([np.full(8, 2.0), fall, [0.6, 1, 2, 4, 8, 16, 32, 64]])
    return LRFinderResult(rates, losses, suggestion=None)


def test_suggestion_methods_read_the_curve_as_fastai():
    curve = synthetic_curve()
    # Points 4..34 are read (a tenth skipped at the start, five at the end).
    # The longest fall runs from point 4 to point 31: the valley is halfway.
    assert curve.suggest("valley") == curve.learning_rates[4 + 9 + 4]
    assert curve.suggest("steep") == curve.learning_rates[20]
    assert curve.suggest("minimum") == pytest.approx(curve.learning_rates[31] / 10)
    with pytest.raises(ValueError, match="suggest"):
        curve.suggest("elbow")
    assert LRFinderResult(curve.learning_rates[:6], curve.losses[:6], None).suggest() is None


def test_no_suggestion_when_the_loss_diverges_at_once():
    model, x, y = linear_problem()
    model.compile(keras.optimizers.SGD(0.01), "mse")
    with pytest.warns(UserWarning, match="lower `start_lr`"):
        result = lr_find(model, (x, y), start_lr=5.0, end_lr=1e4, num_steps=20, batch_size=16)
    assert result.suggestion is None
    assert len(result.losses) < 5


def test_refuses_an_uncompiled_or_unbuilt_model():
    x, y = regression_data()
    with pytest.raises(ValueError, match="Compile the model first"):
        lr_find(dense_model(), (x, y))
    unbuilt = keras.Sequential([keras.layers.Dense(1)])
    unbuilt.compile("sgd", "mse")
    with pytest.raises(ValueError, match="not built"):
        lr_find(unbuilt, (x, y))
    with pytest.raises(TypeError, match="Keras model"):
        lr_find(lambda t: t, (x, y))
    chunked = dense_model()
    chunked.compile("sgd", "mse", steps_per_execution=4)
    with pytest.raises(ValueError, match="steps_per_execution"):
        lr_find(chunked, (x, y))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"start_lr": 0.0}, ValueError, "start_lr"),
        ({"start_lr": 1.0, "end_lr": 0.1}, ValueError, "larger than `start_lr`"),
        ({"end_lr": float("inf")}, ValueError, "`end_lr` must be a finite number > 0"),
        ({"start_lr": True}, ValueError, "start_lr"),
        ({"num_steps": 1}, ValueError, "num_steps"),
        ({"num_steps": 10.0}, ValueError, "num_steps"),
        ({"beta": 1.0}, ValueError, "beta"),
        ({"beta": float("nan")}, ValueError, "beta"),
        ({"divergence_factor": 0.5}, ValueError, "divergence_factor"),
        ({"divergence_factor": float("inf")}, ValueError, "divergence_factor.*None"),
        ({"suggest": "elbow"}, ValueError, "suggest"),
        ({"data": np.ones((8, 6))}, TypeError, "targets"),
        ({"data": (np.ones((8, 6)),)}, ValueError, "tuple of 1"),
    ],
)
def test_bad_arguments_are_refused_by_name(kwargs, error, message):
    model = dense_model()
    model.compile("sgd", "mse")
    kwargs = {"data": regression_data(), **kwargs}
    with pytest.raises(error, match=message):
        lr_find(model, **kwargs)


def test_batch_size_is_for_arrays_only():
    import tensorflow as tf

    model = dense_model()
    model.compile("sgd", "mse")
    dataset = tf.data.Dataset.from_tensor_slices(regression_data()).batch(8)
    with pytest.raises(ValueError, match="batch_size"):
        lr_find(model, dataset, batch_size=8)
