"""`kt.L2SP`: the penalty, its gradient and its log entry against numpy; frozen
variables; attaching, removing, saving and resuming."""

import keras
import numpy as np
import pytest
from regularization.regularization_testing import total, zero_loss
from testing_utils import dense_model, regression_data, values

import keras_transfer as kt

ALPHA, BETA = 0.3, 0.2
PRETRAINED = ("a", "b")


def layer_values(model, names):
    return {name: values(model.get_layer(name).weights) for name in names}


def perturb(model, names, seed=1):
    """Moves the named layers' weights away from where they are."""
    rng = np.random.default_rng(seed)
    for name in names:
        for variable in model.get_layer(name).weights:
            variable.assign(variable + rng.normal(size=variable.shape).astype("float32"))


def reference_penalty(model, anchors, alpha=ALPHA, beta=BETA, layers=("a", "b", "head")):
    """alpha/2 * sum ||w - w0||^2 over the anchored layers + beta/2 * sum ||w||^2 over the head."""
    total = 0.0
    for name in layers:
        for now, anchor in zip(values(model.get_layer(name).weights), anchors.get(name, [])):
            total += alpha / 2 * np.sum((now - anchor) ** 2)
        if name == "head":
            total += beta / 2 * sum(np.sum(w**2) for w in values(model.get_layer(name).weights))
    return total


def test_penalty_and_its_gradient_equal_the_numpy_reference():
    model = dense_model()
    anchors = layer_values(model, PRETRAINED)
    l2sp = kt.L2SP(model, alpha=ALPHA, beta=BETA)
    perturb(model, PRETRAINED + ("head",))
    before = layer_values(model, PRETRAINED + ("head",))
    # One term per variable, in `model.losses`.
    assert len(model.losses) == 6
    np.testing.assert_allclose(total(model.losses), reference_penalty(model, anchors), rtol=1e-5)
    np.testing.assert_allclose(
        total([l2sp.penalty()]), reference_penalty(model, anchors), rtol=1e-5
    )
    # One SGD step at rate 1 on no data loss moves each weight by minus its
    # penalty gradient: alpha * (w - w0) when anchored, beta * w in the head.
    model.compile(keras.optimizers.SGD(1.0), loss=zero_loss)
    x, y = regression_data(8)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for name in PRETRAINED:
        for now, was, anchor in zip(
            values(model.get_layer(name).weights), before[name], anchors[name]
        ):
            np.testing.assert_allclose(now, was - ALPHA * (was - anchor), rtol=1e-5, atol=1e-6)
    for now, was in zip(values(model.get_layer("head").weights), before["head"]):
        np.testing.assert_allclose(now, was - BETA * was, rtol=1e-5, atol=1e-6)


class PenaltyAtEachStep(keras.callbacks.Callback):
    """The full penalty at the weights each training step starts from."""

    def __init__(self, l2sp):
        super().__init__()
        self.l2sp = l2sp
        self.by_epoch = []
        self.at_epoch_end = []

    def on_epoch_begin(self, epoch, logs=None):
        self.by_epoch.append([])

    def on_train_batch_begin(self, batch, logs=None):
        _ = self.model  # Writes a JAX fit's pending state into the variables.
        self.by_epoch[-1].append(total([self.l2sp.penalty()]))

    def on_epoch_end(self, epoch, logs=None):
        _ = self.model
        self.at_epoch_end.append(total([self.l2sp.penalty()]))


def test_logged_l2sp_loss_is_the_mean_penalty_of_the_epochs_steps():
    model = dense_model()
    l2sp = kt.L2SP(model, alpha=ALPHA, beta=BETA)
    perturb(model, PRETRAINED)
    model.compile(keras.optimizers.SGD(0.5), loss=zero_loss)
    recorder = PenaltyAtEachStep(l2sp)
    x, y = regression_data(32)
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        shuffle=False,
        verbose=0,
        validation_data=(x, y),
        callbacks=[recorder],
    )
    expected = [np.mean(steps) for steps in recorder.by_epoch]
    assert expected[0] > expected[1] > 0  # The penalty pulls the weights back.
    np.testing.assert_allclose(history.history["l2sp_loss"], expected, rtol=1e-5)
    # With no data loss, the whole loss is the penalty.
    np.testing.assert_allclose(history.history["loss"], expected, rtol=1e-5)
    # Validation runs at the epoch's final weights.
    np.testing.assert_allclose(history.history["val_l2sp_loss"], recorder.at_epoch_end, rtol=1e-5)


def test_frozen_variables_stay_put_and_carry_no_penalty():
    model = dense_model()
    anchors = layer_values(model, PRETRAINED)
    kt.L2SP(model, alpha=ALPHA, beta=BETA)
    perturb(model, PRETRAINED)
    kt.freeze(model, trainable_groups=2)  # `a` frozen; `b` and the head train.
    frozen = values(model.get_layer("a").weights)
    trainable_part = reference_penalty(model, anchors, layers=("b", "head"))
    assert trainable_part < reference_penalty(model, anchors)
    assert len(model.losses) == 4
    np.testing.assert_allclose(total(model.losses), trainable_part, rtol=1e-5)
    model.compile(keras.optimizers.SGD(1.0), loss=zero_loss)
    x, y = regression_data(8)
    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    for now, was in zip(values(model.get_layer("a").weights), frozen):
        np.testing.assert_array_equal(now, was)
    np.testing.assert_allclose(history.history["l2sp_loss"], [trainable_part], rtol=1e-5)


class WeightsAtEpochEnd(keras.callbacks.Callback):
    def __init__(self, names):
        super().__init__()
        self.names = names
        self.snapshots = []

    def on_epoch_end(self, epoch, logs=None):
        self.snapshots.append(layer_values(self.model, self.names))


def test_with_freeze_schedule_a_frozen_group_gets_no_penalty_gradient():
    model = dense_model()
    plan = kt.layer_groups(model)
    anchors = layer_values(model, PRETRAINED)
    l2sp = kt.L2SP(plan, alpha=ALPHA, beta=BETA)
    perturb(model, PRETRAINED)
    perturbed = layer_values(model, PRETRAINED)
    head_term = reference_penalty(model, {}, layers=("head",))
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(1.0), plan, decay=1.0)
    model.compile(optimizer, loss=zero_loss)
    schedule = kt.FreezeSchedule(plan, {0: 1, 1: "all"}, verbose=0)
    recorder = WeightsAtEpochEnd(PRETRAINED)
    x, y = regression_data(8)
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[schedule, recorder])
    # Epoch 0 trains the head alone: `a` and `b` keep their weights, far from
    # their anchors, and the logged penalty is the head's term only.
    for name in PRETRAINED:
        for now, was in zip(recorder.snapshots[0][name], perturbed[name]):
            np.testing.assert_array_equal(now, was)
    np.testing.assert_allclose(history.history["l2sp_loss"][0], head_term, rtol=1e-5)
    # Epoch 1 unfreezes them: one step pulls them toward their anchors.
    for name in PRETRAINED:
        for now, was, anchor in zip(
            values(model.get_layer(name).weights), perturbed[name], anchors[name]
        ):
            np.testing.assert_allclose(now, was - ALPHA * (was - anchor), rtol=1e-5, atol=1e-6)
    assert l2sp.alpha == pytest.approx(ALPHA)


def test_a_cached_freeze_schedule_trains_and_logs_as_the_uncached_one():
    # The cached stage trains a cut-off top model: the penalty must ride
    # along, in the loss and in the logs, on every backend.
    runs = {}
    for cached in (False, True):
        keras.utils.set_random_seed(0)
        model = dense_model()
        plan = kt.layer_groups(model)
        kt.L2SP(plan, alpha=ALPHA, beta=BETA)
        perturb(model, PRETRAINED)
        model.compile(keras.optimizers.SGD(0.01), loss="mse")
        schedule = kt.FreezeSchedule(plan, {0: 1, 1: "all"}, cache_frozen=cached, verbose=0)
        x, y = regression_data(16)
        fit = dict(batch_size=8, epochs=2, shuffle=False, verbose=0)
        if cached:
            history = schedule.fit(x, y, **fit)
        else:
            history = model.fit(x, y, callbacks=[schedule], **fit)
        runs[cached] = (values(model.weights), history.history)
    (uncached_weights, uncached_logs), (cached_weights, cached_logs) = runs[False], runs[True]
    for cached_value, uncached_value in zip(cached_weights, uncached_weights):
        np.testing.assert_allclose(cached_value, uncached_value, rtol=1e-5, atol=1e-6)
    assert len(cached_logs["l2sp_loss"]) == 2
    np.testing.assert_allclose(cached_logs["l2sp_loss"], uncached_logs["l2sp_loss"], rtol=1e-5)
    np.testing.assert_allclose(cached_logs["loss"], uncached_logs["loss"], rtol=1e-5)


def test_remove_detaches_everything():
    model = dense_model()
    weights_before = [v.path for v in model.weights]
    l2sp = kt.L2SP(model)
    model.compile(keras.optimizers.SGD(0.1), loss="mse")
    x, y = regression_data(8)
    assert "l2sp_loss" in model.fit(x, y, verbose=0).history
    l2sp.remove()
    assert model.losses == []
    assert [v.path for v in model.weights] == weights_before
    assert not hasattr(model, "keras_transfer_l2sp")
    # The train function was traced with the penalty: it is traced again.
    assert sorted(model.fit(x, y, verbose=0).history) == ["loss"]
    with pytest.raises(ValueError, match="not attached"):
        l2sp.remove()


def test_a_layers_own_regularizer_is_kept_and_restored():
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, name="a", kernel_regularizer=keras.regularizers.L2(0.5))(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1, name="head")(hidden))
    kernel = model.get_layer("a").kernel
    own = kernel.regularizer
    l2sp = kt.L2SP(model, alpha=ALPHA, beta=0.0)
    kernel.assign(kernel + 1.0)  # One away from its anchor, everywhere.
    expected_own = 0.5 * np.sum(values([kernel])[0] ** 2)
    expected_l2sp = ALPHA / 2 * np.prod(kernel.shape)
    assert total(model.losses) == pytest.approx(expected_own + expected_l2sp, rel=1e-5)
    l2sp.remove()
    assert kernel.regularizer is own
    assert total(model.losses) == pytest.approx(expected_own, rel=1e-5)


def test_head_groups_by_index_name_and_none():
    model = dense_model()
    l2sp = kt.L2SP(model, groups=["b", -1])
    assert [v.path for v in l2sp.head_variables] == [
        "b/kernel",
        "b/bias",
        "head/kernel",
        "head/bias",
    ]
    l2sp.remove()
    l2sp = kt.L2SP(model, groups=[])
    assert l2sp.head_variables == [] and len(l2sp.anchored_variables) == 6
    l2sp.remove()
    l2sp = kt.L2SP(model, groups="h.*")
    assert [v.path for v in l2sp.head_variables] == ["head/kernel", "head/bias"]


def test_custom_groups_come_from_a_plan():
    model = dense_model()
    plan = kt.layer_groups(model, groups=["^[ab]$", "head"])
    l2sp = kt.L2SP(plan)
    assert [v.path for v in l2sp.anchored_variables] == ["a/kernel", "a/bias", "b/kernel", "b/bias"]


def test_alpha_and_beta_can_be_changed_in_place():
    model = dense_model()
    anchors = layer_values(model, PRETRAINED)
    l2sp = kt.L2SP(model, alpha=ALPHA, beta=BETA)
    perturb(model, PRETRAINED)
    l2sp.alpha, l2sp.beta = 2 * ALPHA, 0.0
    assert (l2sp.alpha, l2sp.beta) == (pytest.approx(2 * ALPHA), 0.0)
    np.testing.assert_allclose(
        total(model.losses), reference_penalty(model, anchors, alpha=2 * ALPHA, beta=0.0), rtol=1e-5
    )
    with pytest.raises(ValueError, match="`alpha` must be a finite number >= 0"):
        l2sp.alpha = -1.0


def copy_weights(source, target):
    for mine, theirs in zip(target.weights, source.weights):
        mine.assign(theirs)


def test_safe_backup_and_restore_resumes_with_the_same_anchors(tmp_path):
    backup_dir = str(tmp_path / "backup")
    x, y = regression_data(16)

    def run(model, epochs):
        l2sp = kt.L2SP(model, alpha=ALPHA, beta=BETA)
        model.compile(keras.optimizers.SGD(0.05), loss="mse")
        backup = kt.SafeBackupAndRestore(backup_dir, delete_checkpoint=False)
        history = model.fit(
            x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=[backup]
        )
        return l2sp, history

    first = dense_model()
    first_l2sp, _ = run(first, epochs=1)
    anchors = values(first_l2sp.weights)
    # A new process: new initial weights (so new anchors at creation), then
    # the backup restores the weights and the first run's anchors.
    keras.utils.set_random_seed(7)
    second = dense_model()
    second_l2sp, history = run(second, epochs=2)
    assert len(history.history["l2sp_loss"]) == 1  # Resumed at epoch 1.
    for restored, saved in zip(values(second_l2sp.weights)[2:], anchors[2:]):
        np.testing.assert_array_equal(restored, saved)  # Strengths and anchors.
    # And the resumed epoch matches an uninterrupted run's second epoch.
    keras.utils.set_random_seed(11)
    straight = dense_model()
    copy_weights(first, straight)
    straight_l2sp = kt.L2SP(straight, alpha=ALPHA, beta=BETA)
    copy_weights(first_l2sp, straight_l2sp)
    straight.compile(keras.optimizers.SGD(0.05), loss="mse")
    straight.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0)
    for a, b in zip(values(second.weights), values(straight.weights)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("suffix", [".keras", ".weights.h5"])
def test_a_saved_model_gets_its_penalty_back_with_load(tmp_path, suffix):
    model = dense_model()
    l2sp = kt.L2SP(model, alpha=ALPHA, beta=BETA, groups=["b", "head"])
    perturb(model, PRETRAINED)
    path = str(tmp_path / f"model{suffix}")
    if suffix == ".keras":
        model.compile(keras.optimizers.SGD(0.1), loss="mse")
        model.save(path)
        loaded = keras.models.load_model(path)
        assert loaded.losses == []  # Plain Keras loading restores no penalty.
    else:
        model.save_weights(path)
        keras.utils.set_random_seed(3)
        loaded = dense_model()
    restored = kt.L2SP.load(loaded, path, groups=["b", "head"])
    assert (restored.alpha, restored.beta) == (pytest.approx(ALPHA), pytest.approx(BETA))
    for a, b in zip(values(restored.weights), values(l2sp.weights)):
        np.testing.assert_array_equal(a, b)
    assert total(loaded.losses) == pytest.approx(total(model.losses), rel=1e-6)
    assert restored.get_config() == {**l2sp.get_config(), "name": restored.name}


def test_load_refuses_a_file_saved_without_the_penalty(tmp_path):
    path = str(tmp_path / "plain.keras")
    dense_model().save(path)
    loaded = keras.models.load_model(path)
    with pytest.raises(ValueError, match="saved while an L2SP was attached"):
        kt.L2SP.load(loaded, path)
    assert loaded.losses == [] and not hasattr(loaded, "keras_transfer_l2sp")


def test_sequential_and_subclassed_models_carry_the_anchors(tmp_path):
    class Subclassed(keras.Model):
        def __init__(self):
            super().__init__()
            self.body = keras.layers.Dense(4, name="body")
            self.head = keras.layers.Dense(1, name="head")

        def call(self, inputs):
            return self.head(self.body(inputs))

    sequential = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, name="body"), keras.layers.Dense(1, name="head")]
    )
    subclassed = Subclassed()
    subclassed(np.zeros((1, 6), "float32"))
    x, y = regression_data(8)
    for model in (sequential, subclassed):
        count = len(model.weights)
        l2sp = kt.L2SP(model)
        assert len(model.weights) == count + len(l2sp.weights)
        assert [m.name for m in model.metrics].count("l2sp_loss") == 1
        model.compile(keras.optimizers.SGD(0.1), loss="mse")
        assert "l2sp_loss" in model.fit(x, y, verbose=0).history
        path = str(tmp_path / f"{model.name}.weights.h5")
        model.save_weights(path)
        l2sp.remove()
        assert len(model.weights) == count and model.losses == []
        assert kt.L2SP.load(model, path).alpha == pytest.approx(0.01)


def test_is_registered_with_a_plain_config():
    assert keras.saving.get_registered_object("keras_transfer>L2SP") is kt.L2SP
    l2sp = kt.L2SP(dense_model(), alpha=0.5, beta=0.0, groups=[-1])
    assert l2sp.get_config() == {"name": l2sp.name, "alpha": 0.5, "beta": 0.0, "groups": [-1]}
    assert kt.L2SP(dense_model(), alpha=0.01).alpha == 0.01  # As given, not its float32.
    with pytest.raises(TypeError, match="belongs to a model.*kt.L2SP.load"):
        kt.L2SP.from_config(l2sp.get_config())


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"alpha": -0.1}, "`alpha` must be a finite number >= 0"),
        ({"alpha": float("nan")}, "`alpha` must be a finite number >= 0"),
        ({"beta": float("inf")}, "`beta` must be a finite number >= 0"),
        ({"groups": [3]}, "out of range"),
        ({"groups": ["tail"]}, "matches none of the model's groups"),
        ({"groups": [0, 1, 2]}, "names every group as the head"),
        ({"groups": ["("]}, "Invalid head group pattern"),
    ],
)
def test_bad_arguments_say_what_to_do(arguments, message):
    with pytest.raises(ValueError, match=message):
        kt.L2SP(dense_model(), **arguments)


def test_bad_types_and_models_say_what_to_do():
    with pytest.raises(ValueError, match="`alpha` must be"):
        kt.L2SP(dense_model(), alpha=True)
    with pytest.raises(TypeError, match="by index or by name"):
        kt.L2SP(dense_model(), groups=[1.5])
    frozen = dense_model()
    frozen.trainable = False
    with pytest.raises(ValueError, match="no trainable weights.*kt.unfreeze"):
        kt.L2SP(frozen)
    single = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    with pytest.raises(ValueError, match="one layer group.*groups=\\[\\]"):
        kt.L2SP(single)
    assert len(kt.L2SP(single, groups=[]).anchored_variables) == 2
    model = dense_model()
    kt.L2SP(model)
    with pytest.raises(ValueError, match="already has an L2SP"):
        kt.L2SP(model)
