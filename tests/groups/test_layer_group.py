"""The plan of layer groups: resolved once per model, shared by every rule."""

import gc
import weakref

import keras
import numpy as np
import pytest
from testing_utils import branchy_data, branchy_model, dense_model, regression_data, values

import keras_transfer as kt
from keras_transfer.groups.layer_group import check_same_groups


def test_a_model_is_grouped_once_and_the_plan_is_shared():
    model = dense_model()
    plan = kt.layer_groups(model)
    assert isinstance(plan, kt.LayerGroupPlan)
    assert kt.layer_groups(model) is plan
    assert kt.layer_groups(plan) is plan
    assert plan.model is model and plan.automatic
    regex_plan = kt.layer_groups(model, groups=["^a$", "^b$|head"])
    assert regex_plan is not plan
    assert kt.layer_groups(model, groups=["^a$", "^b$|head"]) is regex_plan
    assert regex_plan.patterns == ("^a$", "^b$|head")


def test_the_plan_labels_every_variable_with_its_group():
    model = dense_model(with_batchnorm=True)
    plan = kt.layer_groups(model)
    assert plan.names == ["a", "b", "head"]
    for index, group in enumerate(plan):
        for variable in group.variables:
            assert plan.group_index(variable) == index
    moving_mean = model.get_layer("bn").moving_mean
    assert plan.group_index(moving_mean) == 0
    assert plan.group_index(keras.Variable(1.0)) is None
    assert [group.name for group in plan[1:]] == ["b", "head"]


def test_a_model_whose_variables_change_is_grouped_again():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="body")])
    model.add(keras.layers.Dense(2, name="head"))
    first = kt.layer_groups(model)
    assert first.names == ["body", "head"]
    model.add(keras.layers.Dense(1, name="extra"))
    second = kt.layer_groups(model)
    assert second is not first and second.names == ["body", "head", "extra"]


def test_the_cache_keeps_neither_model_nor_plan_alive():
    model = dense_model()
    plan_ref = weakref.ref(kt.layer_groups(model))
    gc.collect()
    assert plan_ref() is None  # nobody holds the plan: the cache let it go
    model_ref = weakref.ref(model)
    kt.layer_groups(model)
    del model
    gc.collect()
    assert model_ref() is None


def test_a_plan_given_in_place_of_the_model_is_not_given_twice():
    model = dense_model()
    plan = kt.layer_groups(model)
    with pytest.raises(ValueError, match="Give the groups once"):
        kt.layer_groups(plan, groups=["a", "b|head"])


def test_groups_given_by_hand_form_a_plan_without_a_model():
    model = dense_model()
    hand = [kt.LayerGroup("low", [model.get_layer("a")]), kt.LayerGroup("top", [model.layers[-1]])]
    plan = kt.layer_groups(model, groups=hand)
    assert plan.names == ["low", "top"] and not plan.automatic
    with pytest.raises(ValueError, match="one or more"):
        kt.LayerGroupPlan([])


def test_freeze_accepts_the_plan_in_place_of_the_model():
    model = dense_model()
    plan = kt.layer_groups(model, groups=["^a$|^b$", "head"])
    assert kt.freeze(plan, trainable_groups=1) is plan
    assert [layer.trainable for layer in model.layers[1:]] == [False, False, True]


def test_one_plan_given_to_schedule_and_optimizer_trains_as_groups_given_twice():
    x, y = branchy_data()
    patterns = ["^a$", "^b$|head"]
    results = []
    for share_a_plan in (True, False):
        keras.utils.set_random_seed(0)
        model = branchy_model()
        if share_a_plan:
            plan = kt.layer_groups(model, groups=patterns)
            optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), plan, decay=4.0)
            schedule = kt.FreezeSchedule(plan, {0: 1, 1: "all"}, verbose=0)
        else:
            optimizer = kt.DiscriminativeLR(
                keras.optimizers.SGD(0.1), model, decay=4.0, groups=patterns
            )
            schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, groups=patterns, verbose=0)
        model.compile(optimizer, "mse")
        model.fit(x, y, epochs=2, batch_size=8, shuffle=False, verbose=0, callbacks=[schedule])
        results.append(values(model.weights))
        assert optimizer.group_plan.names == patterns
        assert optimizer.multiplier_for(model.get_layer("a").kernel) == 0.25
    for shared, twice in zip(*results):
        np.testing.assert_array_equal(shared, twice)


def test_a_schedule_and_an_optimizer_on_different_groups_is_an_error_naming_both():
    x, y = regression_data()
    model = dense_model()
    model.compile(kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model, decay=2.0), "mse")
    groups = ["^a$|^b$", "head"]
    with pytest.raises(ValueError, match="FreezeSchedule and DiscriminativeLR") as error:
        # Raised as soon as the schedule meets the compiled model.
        kt.FreezeSchedule(model, {0: 1, 1: "all"}, groups=groups, verbose=0)
    message = str(error.value)
    # And at `fit`, for a schedule made before the model was compiled.
    late = dense_model()
    schedule = kt.FreezeSchedule(late, {0: 1, 1: "all"}, groups=groups, verbose=0)
    late.compile(kt.DiscriminativeLR(keras.optimizers.SGD(0.1), late, decay=2.0), "mse")
    with pytest.raises(ValueError, match="FreezeSchedule and DiscriminativeLR"):
        late.fit(x, y, epochs=2, verbose=0, callbacks=[schedule])
    assert "['a', 'b', 'head'] (automatic groups)" in message
    assert "groups=['^a$|^b$', 'head']" in message
    assert "kt.layer_groups(model, groups=...)" in message


def test_regex_only_multipliers_do_not_depend_on_groups():
    x, y = regression_data()
    model = dense_model()
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model, multipliers={"head": 1.0})
    model.compile(optimizer, "mse")
    schedule = kt.FreezeSchedule(model, {0: 1, 1: "all"}, groups=["^a$|^b$", "head"], verbose=0)
    history = model.fit(x, y, epochs=2, verbose=0, callbacks=[schedule])
    assert optimizer.group_plan is None
    assert history.history["trainable_params"] == [9.0, 137.0]


def test_kt_freeze_checks_the_compiled_optimizer_too():
    x, y = regression_data()
    model = dense_model()
    model.compile(kt.DiscriminativeLR(keras.optimizers.SGD(0.1), model), "mse")
    model.fit(x, y, epochs=1, verbose=0)
    kt.freeze(model, trainable_groups=2)  # the same (automatic) plan: fine
    with pytest.raises(ValueError, match="kt.freeze and DiscriminativeLR"):
        kt.freeze(model, trainable_groups=1, groups=["^a$|^b$", "head"])


def test_check_same_groups_accepts_equal_partitions_from_two_plans():
    model = dense_model()
    automatic = kt.layer_groups(model)
    by_regex = kt.layer_groups(model, groups=["^a$", "^b$", "head"])
    check_same_groups(automatic, "one", by_regex, "other")  # same partition: no error
    merged = kt.layer_groups(model, groups=["^a$|^b$", "head"])
    with pytest.raises(ValueError, match="one and other use different layer groups"):
        check_same_groups(automatic, "one", merged, "other")


def test_configs_store_the_patterns_a_plan_came_from():
    model = dense_model()
    plan = kt.layer_groups(model, groups=["^a$|^b$", "head"])
    schedule = kt.FreezeSchedule(plan, {0: 1, 1: "all"}, verbose=0)
    assert schedule.get_config()["groups"] == ["^a$|^b$", "head"]
    optimizer = kt.DiscriminativeLR(keras.optimizers.SGD(0.1), plan)
    assert optimizer.get_config()["groups"] == ["^a$|^b$", "head"]
    automatic = kt.FreezeSchedule(kt.layer_groups(model), {0: 1, 1: "all"}, verbose=0)
    assert automatic.get_config()["groups"] is None
