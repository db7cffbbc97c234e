"""Property-based tests (hypothesis) of the library's small specification
languages (FreezeSchedule schedules, DiscriminativeLR multipliers, layer-group
regexes) and of `get_config` / `from_config` for every public class.

Each property states the documented behaviour as a reference function and
checks the library against it on drawn examples: a spec is either refused with
a clear `ValueError` / `TypeError`, or it does what the reference says.
"""

import copy
import importlib
import inspect
import json
import pkgutil
import re
import string

import keras
import numpy as np
import pytest
from distillation.distillation_testing import classifier, frozen_teacher
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import keras_transfer as kt

ON_TENSORFLOW = keras.config.backend() == "tensorflow"

# Reproducible in CI: the same examples on every run and machine (derandomize),
# nothing written to a `.hypothesis` folder, no per-example deadline (the first
# example of a test pays for tracing), few enough examples for a few seconds.
PROPERTY = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
ROUND_TRIP = settings(PROPERTY, max_examples=8)


def chain_model(num_layers, names=None):
    """A Sequential of Dense layers, one layer group each, input to output."""
    names = names or [f"g{index}" for index in range(num_layers)]
    return keras.Sequential(
        [keras.Input((2,)), *[keras.layers.Dense(2, name=name) for name in names]],
        name="chain",
    )


@pytest.fixture(scope="module")
def chains():
    return {count: chain_model(count) for count in range(2, 6)}


# --- FreezeSchedule schedules ---------------------------------------------------

STAGES = st.one_of(st.integers(1, 6), st.just("all"))


@st.composite
def valid_schedules(draw, stages=STAGES):
    """(schedule as given, the same with int keys): keys are epochs >= 0,
    0 included, each written as an int or as a string of digits."""
    starts = [0, *draw(st.sets(st.integers(1, 40), max_size=5))]
    given_schedule = {}
    for start in draw(st.permutations(starts)):
        key = str(start) if draw(st.booleans()) else start
        given_schedule[key] = draw(stages)
    return given_schedule, {int(key): value for key, value in given_schedule.items()}


def stage_in_force(schedule, position):
    """The documented meaning: the entry with the greatest start <= position."""
    return schedule[max(start for start in schedule if start <= position)]


def positions(schedule):
    return range(max(schedule) + 3)


@PROPERTY
@given(valid_schedules())
def test_freeze_schedule_stage_is_the_entry_with_the_greatest_start_before(drawn):
    given_schedule, expected = drawn
    if expected == {0: 1}:
        with pytest.raises(ValueError, match="never unfreezes anything beyond the top group"):
            kt.FreezeSchedule(schedule=given_schedule)
        return
    schedule = kt.FreezeSchedule(schedule=given_schedule, verbose=0)
    assert list(schedule.schedule) == sorted(expected)
    for position in positions(expected):
        assert schedule.stage_for(position) == stage_in_force(expected, position)
    config = schedule.get_config()
    json.dumps(config)  # plain values only
    restored = kt.FreezeSchedule.from_config(config)
    assert restored.get_config() == config
    for position in positions(expected):
        assert restored.stage_for(position) == schedule.stage_for(position)


@pytest.fixture(scope="module")
def three_groups():
    return chain_model(3, ["a", "b", "head"])


@PROPERTY
@given(valid_schedules())
def test_freeze_schedule_on_a_model_trains_exactly_the_top_groups_in_force(three_groups, drawn):
    model = three_groups
    given_schedule, expected = drawn
    # Stages are checked in order of their start.
    too_many = [expected[s] for s in sorted(expected) if expected[s] != "all" and expected[s] > 3]
    if too_many:
        with pytest.raises(ValueError, match=f"Cannot make {too_many[0]} group"):
            kt.FreezeSchedule(model, given_schedule, verbose=0)
        return
    assume(expected != {0: 1})  # refused with or without a model (above)
    schedule = kt.FreezeSchedule(model, given_schedule, verbose=0)
    for position in positions(expected):
        schedule.on_epoch_begin(position)
        stage = stage_in_force(expected, position)
        count = 3 if stage == "all" else stage
        assert [layer.trainable for layer in model.layers] == [i >= 3 - count for i in range(3)]
    kt.unfreeze(model)


# Keys that are not an epoch index >= 0 (a bool or a float is not one, even when
# it equals an int) and values that are not a number of groups >= 1 or "all".
BAD_KEYS = [-1, -7, True, False, 1.0, 2.5, None, "x", "-1", "1.5", " 1", "", (0,)]
BAD_STAGES = [0, -1, -3, True, False, 1.5, 2.0, None, "ALL", "All", "2", [], float("nan")]


@PROPERTY
@given(valid_schedules(), st.sampled_from(BAD_KEYS), STAGES)
def test_freeze_schedule_refuses_a_bad_key_naming_it(drawn, bad_key, stage):
    # The bad key goes first, so that a key equal to it (True == 1) cannot replace it.
    schedule = {bad_key: stage, **drawn[0]}
    with pytest.raises(
        ValueError, match=rf"Schedule keys must be .* >= 0, got {re.escape(repr(bad_key))}"
    ):
        kt.FreezeSchedule(schedule=schedule)


@PROPERTY
@given(valid_schedules(), st.sampled_from(BAD_STAGES), st.data())
def test_freeze_schedule_refuses_a_bad_stage_naming_it(drawn, bad_stage, data):
    schedule = dict(drawn[0])
    schedule[data.draw(st.sampled_from(sorted(schedule, key=str)))] = bad_stage
    with pytest.raises(ValueError, match=rf"Schedule value {re.escape(repr(bad_stage))} at"):
        kt.FreezeSchedule(schedule=schedule)


@PROPERTY
@given(valid_schedules())
def test_freeze_schedule_without_a_start_entry_is_refused(drawn):
    schedule = {key: value for key, value in drawn[0].items() if int(key) != 0}
    if not schedule:
        with pytest.raises(TypeError, match="non-empty dict"):
            kt.FreezeSchedule(schedule=schedule)
    else:
        with pytest.raises(ValueError, match="has no entry for 0"):
            kt.FreezeSchedule(schedule=schedule)


@pytest.mark.parametrize("schedule", [[0, 1], ((0, 1),), "0:1", 3, {0, 1}])
def test_freeze_schedule_that_is_no_dict_is_a_type_error(schedule):
    with pytest.raises(TypeError, match="must be a non-empty dict"):
        kt.FreezeSchedule(schedule=schedule)


@pytest.mark.parametrize("schedule", [{0: 1, "0": 2}, {0: 1, 1: 2, "01": 3}])
def test_freeze_schedule_refuses_two_keys_for_one_epoch(schedule):
    with pytest.raises(ValueError, match="twice|more than once|same"):
        kt.FreezeSchedule(schedule=schedule)


def test_freeze_schedule_refuses_a_digit_string_that_is_no_number_clearly():
    with pytest.raises(ValueError, match="Schedule keys must be"):
        kt.FreezeSchedule(schedule={0: 1, "²": 2})


# --- DiscriminativeLR multipliers -----------------------------------------------

MULTIPLIER_VALUES = st.one_of(
    st.floats(0, 10, allow_nan=False, allow_infinity=False), st.integers(0, 10)
)


def assert_optimizer_round_trips(optimizer, model):
    """get_config / from_config (and Keras' serialization) give the same
    config and, once built, the same multiplier for every variable."""
    config = optimizer.get_config()
    json.dumps(keras.saving.serialize_keras_object(optimizer))
    for restored in (
        kt.DiscriminativeLR.from_config(config),
        keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(optimizer)),
    ):
        assert type(restored) is kt.DiscriminativeLR
        assert restored.get_config() == config
        restored.build(model.trainable_variables)
        for variable in model.trainable_variables:
            assert restored.multiplier_for(variable) == optimizer.multiplier_for(variable)


@PROPERTY
@given(st.integers(2, 5), st.floats(0.05, 20), st.sampled_from(["sgd", "adam", "adamw"]))
def test_decay_divides_the_rate_by_decay_per_group_below_the_top(chains, count, decay, inner):
    model = chains[count]
    optimizer = kt.DiscriminativeLR(inner, model, decay=decay)
    optimizer.build(model.trainable_variables)
    for index, layer in enumerate(model.layers):
        for variable in layer.trainable_variables:
            got = optimizer.multiplier_for(variable)
            if index == count - 1:
                assert got == 1.0  # the top group trains at the optimizer's rate
            else:
                assert got == pytest.approx(decay ** -(count - 1 - index), rel=1e-12)
    assert_optimizer_round_trips(optimizer, model)


def test_default_decay_is_ulmfits_2_6(chains):
    model = chains[3]
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model)
    optimizer.build(model.trainable_variables)
    got = [optimizer.multiplier_for(layer.kernel) for layer in model.layers]
    assert got == pytest.approx([2.6**-2, 2.6**-1, 1.0], rel=1e-12)


@st.composite
def explicit_multipliers(draw):
    """(number of groups, multipliers): distinct groups by index (negative
    counts from the top) and regexes naming a layer or a layer's kernel."""
    count = draw(st.integers(2, 5))
    spec = {}
    for group in draw(st.lists(st.integers(0, count - 1), unique=True, max_size=count)):
        spec[group - count if draw(st.booleans()) else group] = draw(MULTIPLIER_VALUES)
    for group in draw(st.lists(st.integers(0, count - 1), unique=True, max_size=2)):
        spec[draw(st.sampled_from([f"g{group}/", f"g{group}/kernel"]))] = draw(MULTIPLIER_VALUES)
    if draw(st.booleans()):
        spec["bias$"] = draw(MULTIPLIER_VALUES)
    assume(spec)
    order = draw(st.permutations(list(spec)))
    return count, {key: spec[key] for key in order}


def expected_multiplier(spec, count, path, group):
    """The documented meaning: the first regex searched in the variable's path,
    else its group's index entry, else 1.0."""
    for key, value in spec.items():
        if isinstance(key, str) and re.search(key, path):
            return float(value)
    by_group = {key % count: float(value) for key, value in spec.items() if isinstance(key, int)}
    return by_group.get(group, 1.0)


@PROPERTY
@given(explicit_multipliers())
def test_explicit_multipliers_by_index_and_regex(chains, drawn):
    count, spec = drawn
    model = chains[count]
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model, multipliers=spec)
    optimizer.build(model.trainable_variables)
    for group, layer in enumerate(model.layers):
        for variable in layer.trainable_variables:
            expected = expected_multiplier(spec, count, variable.path, group)
            assert optimizer.multiplier_for(variable) == expected, variable.path
    assert_optimizer_round_trips(optimizer, model)


BAD_MULTIPLIERS = [
    ({}, TypeError, "non-empty dict"),
    ([0.1, 1.0], TypeError, "non-empty dict"),
    ((0.1, 1.0), TypeError, "non-empty dict"),
    (0.5, TypeError, "non-empty dict"),
    ({True: 1.0}, TypeError, "neither a group index nor a regex"),
    ({1.5: 1.0}, TypeError, "neither a group index nor a regex"),
    ({None: 1.0}, TypeError, "neither a group index nor a regex"),
    ({(0,): 1.0}, TypeError, "neither a group index nor a regex"),
    ({0: -0.5}, ValueError, "must be a finite number >= 0"),
    ({0: True}, ValueError, "must be a finite number >= 0"),
    ({0: "1"}, ValueError, "must be a finite number >= 0"),
    ({0: None}, ValueError, "must be a finite number >= 0"),
    ({0: float("nan")}, ValueError, "must be a finite number >= 0"),
    ({0: float("inf")}, ValueError, "must be a finite number >= 0"),
    ({"[": 1.0}, ValueError, "Invalid multiplier regex"),
    ({"(": 1.0}, ValueError, "Invalid multiplier regex"),
    ({"a{2,1}": 1.0}, ValueError, "Invalid multiplier regex"),
]


@PROPERTY
@given(st.sampled_from(BAD_MULTIPLIERS), explicit_multipliers())
def test_bad_multipliers_are_refused_with_a_message(chains, bad, drawn):
    multipliers, error, message = bad
    if isinstance(multipliers, dict) and multipliers:
        multipliers = {**multipliers, **{k: v for k, v in drawn[1].items() if k not in multipliers}}
    with pytest.raises(error, match=re.escape(message)):
        kt.DiscriminativeLR("sgd", chains[drawn[0]], multipliers=multipliers)


@PROPERTY
@given(st.sampled_from([0, -1.0, -2.5, True, "2.6", float("nan"), float("inf"), [2.6]]))
def test_bad_decay_is_refused(chains, decay):
    with pytest.raises(ValueError, match="`decay` must be a number > 0"):
        kt.DiscriminativeLR("sgd", chains[2], decay=decay)


def test_decay_and_multipliers_together_are_refused(chains):
    with pytest.raises(ValueError, match="either `decay` or `multipliers`"):
        kt.DiscriminativeLR("sgd", chains[2], decay=2.0, multipliers={0: 0.5})


@PROPERTY
@given(st.integers(2, 5), st.data())
def test_multipliers_that_fit_no_group_or_variable_are_refused_when_built(chains, count, data):
    model = chains[count]
    index = data.draw(st.one_of(st.integers(count, count + 3), st.integers(-count - 3, -count - 1)))
    optimizer = kt.DiscriminativeLR("sgd", model, multipliers={index: 0.5})
    with pytest.raises(ValueError, match=f"group index {index} is out of range.*{count} groups"):
        optimizer.build(model.trainable_variables)
    optimizer = kt.DiscriminativeLR("sgd", model, multipliers={"no_such_layer": 0.5})
    with pytest.raises(ValueError, match="'no_such_layer' matches no variable path"):
        optimizer.build(model.trainable_variables)


@PROPERTY
@given(st.integers(2, 5), st.data())
def test_two_indices_for_one_group_are_refused(chains, count, data):
    group = data.draw(st.integers(0, count - 1))
    optimizer = kt.DiscriminativeLR(
        "sgd", chains[count], multipliers={group: 0.1, group - count: 0.2}
    )
    with pytest.raises(ValueError, match="name the same group"):
        optimizer.build(chains[count].trainable_variables)


# --- Layer-group regexes --------------------------------------------------------

LAYER_NAMES = ["stem_conv", "block1_a", "block1_b", "block2_a", "head_dense", "head_out"]
PATTERNS = [
    "stem",
    "block1",
    "block2",
    "block",
    "head",
    "_a$",
    "_b",
    "^b",
    ".*",
    "out$",
    "conv|dense",
    r"\d",
    "zzz",
    "[",
    "(",
    "a{2,1}",
]


@pytest.fixture(scope="module")
def named_model():
    return chain_model(len(LAYER_NAMES), LAYER_NAMES)


def expected_grouping(patterns):
    """The documented meaning, with the order in which problems are reported."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error:
            return "invalid", pattern
    members = [[] for _ in patterns]
    unmatched = []
    for name in LAYER_NAMES:
        index = next((i for i, p in enumerate(patterns) if re.search(p, name)), None)
        (unmatched if index is None else members[index]).append(name)
    for pattern, group in zip(patterns, members):
        if not group:
            return "empty", pattern
    if unmatched:
        return "unmatched", unmatched
    return "ok", members


@PROPERTY
@given(st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=5))
def test_each_layer_joins_the_first_group_whose_regex_it_matches(named_model, patterns):
    outcome, detail = expected_grouping(patterns)
    if outcome == "invalid":
        with pytest.raises(ValueError, match=re.escape(f"Invalid group pattern {detail!r}")):
            kt.layer_groups(named_model, groups=patterns)
    elif outcome == "empty":
        with pytest.raises(
            ValueError, match=re.escape(f"The group pattern {detail!r} matches none")
        ):
            kt.layer_groups(named_model, groups=patterns)
    elif outcome == "unmatched":
        with pytest.raises(
            ValueError, match=re.escape(f"{detail} match none of the group patterns")
        ):
            kt.layer_groups(named_model, groups=patterns)
    else:
        groups = kt.layer_groups(named_model, groups=patterns)
        assert [group.name for group in groups] == patterns
        assert [[layer.name for layer in group.layers] for group in groups] == detail


@pytest.mark.parametrize("groups", [[1, "head"], [None], ["a", b"b"], [re.compile("a")]])
def test_group_patterns_must_be_strings(named_model, groups):
    with pytest.raises(TypeError, match="layer-name regular expressions"):
        kt.layer_groups(named_model, groups=groups)


def test_an_empty_list_of_group_patterns_is_refused(named_model):
    with pytest.raises(ValueError):
        kt.layer_groups(named_model, groups=[])


# --- get_config / from_config of every public class -----------------------------


def public_classes():
    """Every class named in the `__all__` of the package or of a subpackage."""
    modules = [kt] + [
        importlib.import_module(f"keras_transfer.{info.name}")
        for info in pkgutil.iter_modules(kt.__path__)
        if info.ispkg
    ]
    found = {}
    for module in modules:
        for name in getattr(module, "__all__", ()):
            value = getattr(module, name)
            if inspect.isclass(value):
                assert found.setdefault(value.__name__, value) is value, name
    return found


def _positive(low=1e-4, high=10.0):
    return st.floats(low, high, allow_nan=False, allow_infinity=False)


def _one_cycle(draw):
    return kt.schedules.OneCycle(
        max_lr=draw(_positive(1e-5, 1.0)),
        total_steps=draw(st.integers(1, 10_000)),
        pct_start=draw(st.floats(0.01, 0.99)),
        div_factor=draw(_positive(1.0, 100.0)),
        final_div_factor=draw(_positive(1.0, 1e5)),
        anneal_strategy=draw(st.sampled_from(["cos", "linear"])),
    )


def _slanted_triangular(draw):
    return kt.schedules.SlantedTriangular(
        max_lr=draw(_positive(1e-5, 1.0)),
        total_steps=draw(st.integers(10, 10_000)),
        cut_frac=draw(st.floats(0.1, 0.9)),
        ratio=draw(_positive(1.0, 64.0)),
    )


def _freeze_schedule(draw):
    schedule = draw(valid_schedules().filter(lambda drawn: drawn[1] != {0: 1}))[0]
    return kt.FreezeSchedule(
        schedule=schedule,
        unit=draw(st.sampled_from(["epoch", "step"])),
        groups=draw(st.one_of(st.none(), st.lists(st.sampled_from(PATTERNS[:12]), min_size=2))),
        freeze_batchnorm=draw(st.booleans()),
        verbose=draw(st.sampled_from([0, 1])),
    )


def _discriminative_lr(draw):
    model = chain_model(3)
    inner = draw(st.sampled_from(["sgd", "adam", "adamw", "rmsprop"]))
    if draw(st.booleans()):
        optimizer = kt.DiscriminativeLR(inner, model, decay=draw(_positive(0.1, 10.0)))
    else:
        optimizer = kt.DiscriminativeLR(inner, model, multipliers={0: draw(_positive(0, 1))})
    if draw(st.booleans()):
        optimizer.build(model.trainable_variables)
    return optimizer


def _mmd_loss(draw):
    numbers = st.lists(_positive(1e-2, 100.0), min_size=1, max_size=4)
    bandwidths = draw(st.one_of(st.none(), numbers))
    multipliers = draw(numbers if bandwidths is None else st.one_of(st.none(), numbers))
    return kt.MMDLoss(bandwidths=bandwidths, bandwidth_multipliers=multipliers)


# Classes built from drawn arguments: name -> function of `draw`.
DRAWN = {
    "OneCycle": _one_cycle,
    "SlantedTriangular": _slanted_triangular,
    "FreezeSchedule": _freeze_schedule,
    "DiscriminativeLR": _discriminative_lr,
    "MMDLoss": _mmd_loss,
    "CoralLoss": lambda draw: kt.CoralLoss(name=draw(st.sampled_from(["coral", "c"]))),
    "DomainConfusionLoss": lambda draw: kt.DomainConfusionLoss(
        draw(st.sampled_from(["adversarial", "confusion"]))
    ),
    "KnowledgeDistillationLoss": lambda draw: kt.KnowledgeDistillationLoss(
        temperature=draw(_positive(0.1, 20.0)), from_logits=draw(st.booleans())
    ),
    "GradientReversal": lambda draw: kt.GradientReversal(draw(st.floats(0, 10))),
    "DomainAdaptationSchedule": lambda draw: kt.DomainAdaptationSchedule(
        ramp=draw(st.sampled_from(["ganin", "constant", "linear"])),
        gamma=draw(_positive(0.1, 50.0)),
        unit=draw(st.sampled_from(["step", "epoch"])),
    ),
    "NonFiniteGuard": lambda draw: kt.NonFiniteGuard(
        on_nonfinite=draw(st.sampled_from(["raise", "skip"])),
        monitor=draw(st.sampled_from(["loss", "val_loss"])),
        max_skips=draw(st.integers(0, 100)),
        verbose=draw(st.sampled_from([0, 1])),
    ),
    "PrototypeHead": lambda draw: kt.PrototypeHead(
        draw(st.integers(2, 20)),
        scale=draw(_positive(0.1, 50.0)),
        learnable_scale=draw(st.booleans()),
    ),
    "SafeBackupAndRestore": lambda draw: kt.SafeBackupAndRestore(
        "backups/" + draw(st.text(string.ascii_letters + "_-", min_size=1, max_size=8)),
        save_freq=draw(st.one_of(st.just("epoch"), st.just(False), st.integers(1, 1000))),
        delete_checkpoint=draw(st.booleans()),
        keep=draw(st.integers(2, 5)),
        double_checkpoint=draw(st.booleans()),
    ),
}


def _distillation_model(tmp_path):
    return kt.DistillationModel(
        frozen_teacher(), classifier(4, "student"), temperature=4.0, distillation_weight=0.25
    )


def _domain_adaptation_model(tmp_path):
    from adaptation.adaptation_utils import layers

    _, task, _ = layers()
    inputs = keras.Input((3,), name="x")
    features = keras.Model(inputs, keras.layers.Dense(4, name="f1")(inputs), name="features")
    model = kt.DomainAdaptationModel(features, task, adaptation_loss=kt.MMDLoss(bandwidths=[1.0]))
    model(np.zeros((2, 3), "float32"))
    return model


def _multi_task_model(tmp_path):
    inputs = keras.Input((3,), name="x")
    backbone = keras.Model(inputs, keras.layers.Dense(4)(inputs))
    return kt.MultiTaskModel(backbone, {"a": keras.layers.Dense(2), "b": keras.layers.Dense(1)})


def _hub_layer(tmp_path):
    if not ON_TENSORFLOW:
        pytest.skip("kt.HubLayer runs SavedModels: TensorFlow backend only")
    from backbones.saved_models import save_encoder

    return kt.HubLayer(save_encoder(tmp_path), trainable=True, group_patterns=["layer_0", "."])


# Classes that need models or files: name -> function of a temporary folder.
FIXED = {
    "DistillationModel": _distillation_model,
    "DomainAdaptationModel": _domain_adaptation_model,
    "HubLayer": _hub_layer,
    "MultiTaskModel": _multi_task_model,
}

# Public classes that are not Keras objects and have no config, on purpose.
SKIPPED = {
    "LayerGroup": "live layers and variables; rebuilt by kt.layer_groups, saved as regexes",
    "LayerGroupPlan": "live layers and variables; rebuilt by kt.layer_groups, saved as regexes",
    "FeatureCache": "a cache of arrays on a model, not a Keras object",
    "LRFinderResult": "the result of kt.lr_find, a plain dataclass",
    "FinetuneResult": "the result of kt.finetune, a plain dataclass",
    "LabelledData": "the data kt.finetune reads, a plain dataclass",
    "NonFiniteLossError": "an exception",
    "ZeroShotClassifier": (
        "holds a Keras model (.model saves like any model; export() writes a SavedModel)"
    ),
    "BackboneRanking": "the result of kt.rank_backbones, a plain table",
    "RankedBackbone": "a row of kt.rank_backbones' result, a plain dataclass",
    "LoraSummary": "the result of kt.enable_lora, a plain summary",
    "FewShotEpisodes": "the episodes kt.few_shot_episodes draws, plain arrays",
    "FewShotEpisode": "one episode of kt.few_shot_episodes, plain arrays",
    "L2SP": "a penalty attached to a live model; its state is in the model's weights and "
    "L2SP.load re-attaches it after load_model",
    "EWC": "a penalty attached to a live model; its state is in the model's weights and "
    "EWC.load re-attaches it after load_model",
}


def test_every_public_class_is_round_tripped_or_skipped_on_purpose():
    public = set(public_classes())
    covered = set(DRAWN) | set(FIXED) | set(SKIPPED)
    assert not public - covered, f"public classes without a round-trip test: {public - covered}"
    assert not covered - public, f"entries for classes that are not public: {covered - public}"
    for name in set(DRAWN) | set(FIXED):
        cls = public_classes()[name]
        assert callable(getattr(cls, "get_config", None)), name
        assert keras.saving.get_registered_name(cls) == f"keras_transfer>{name}"


def probe(obj):
    """What the object computes, where that is cheap: a schedule's rates, a
    loss on a fixed batch."""
    if isinstance(obj, keras.optimizers.schedules.LearningRateSchedule):
        steps = sorted({0, 1, obj.total_steps // 2, obj.total_steps, obj.total_steps + 5})
        return [float(obj(step)) for step in steps]
    if isinstance(obj, (kt.KnowledgeDistillationLoss, kt.CoralLoss, kt.MMDLoss)):
        rng = np.random.default_rng(0)
        a, b = (rng.uniform(0.1, 1.0, size=(6, 3)).astype("float32") for _ in range(2))
        return float(keras.ops.convert_to_numpy(obj(a, b)))
    return None


def assert_round_trips(obj, safe_mode=True):
    config = obj.get_config()
    serialized = keras.saving.serialize_keras_object(obj)
    json.dumps(serialized)  # plain values only
    rebuilt = type(obj).from_config(obj.get_config())
    again = keras.saving.deserialize_keras_object(serialized, safe_mode=safe_mode)
    for restored in (rebuilt, again):
        assert type(restored) is type(obj)
        assert restored.get_config() == config
        assert probe(restored) == probe(obj)


@pytest.mark.parametrize("name", sorted(DRAWN))
@ROUND_TRIP
@given(data=st.data())
def test_config_round_trip_of_drawn_instances(name, data):
    assert_round_trips(DRAWN[name](data.draw))


@pytest.mark.parametrize("name", sorted(FIXED))
def test_config_round_trip_of_model_and_file_backed_instances(name, tmp_path):
    obj = FIXED[name](tmp_path)
    if name == "HubLayer":
        # A SavedModel is a program: Keras' (safe) deserialization refuses it.
        with pytest.raises(ValueError, match="safe_mode=False"):
            keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
        assert_round_trips(obj, safe_mode=False)
    else:
        assert_round_trips(obj)


# Keras' Functional deserialization pops entries of the config it is given;
# from_config must not empty the caller's dict.
FROM_CONFIG_LEAVES_CONFIG = ["DistillationModel", "DomainAdaptationModel", "MultiTaskModel"]


@pytest.mark.parametrize("name", FROM_CONFIG_LEAVES_CONFIG)
def test_from_config_leaves_the_config_it_is_given_alone(name, tmp_path):
    config = FIXED[name](tmp_path).get_config()
    kept = copy.deepcopy(config)
    public_classes()[name].from_config(config)
    assert config == kept
