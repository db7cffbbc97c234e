"""Keras' own tests for `keras.callbacks.BackupAndRestore`, run against
`kt.SafeBackupAndRestore`.

The test file ships inside the installed keras wheel
(`keras/src/callbacks/backup_and_restore_test.py`); it is loaded from there
at test time, never copied. The name it tests, `callbacks.BackupAndRestore`,
is swapped for ours inside the loaded module only, and each of its test
methods runs as one pytest test on the current backend. Tests that read a
private attribute of Keras' class or match Keras' exact wording are
deselected below, each with its reason and the test of ours that checks the
same behaviour.
"""

from __future__ import annotations

import importlib.util
import pathlib
import types
import unittest
import warnings

import keras
import pytest

import keras_transfer as kt

KERAS_TEST_FILE = (
    pathlib.Path(keras.__file__).parent / "src" / "callbacks" / "backup_and_restore_test.py"
)
TEST_CASE = "BackupAndRestoreCallbackTest"
OURS = "tests/callbacks/test_safe_backup_and_restore.py::"
DESELECTED = {
    "test_best_case_step": (
        "reads Keras' private `_current_epoch` and `_last_batch_seen`; checked by "
        f"{OURS}test_keras_step_case_resumes_at_the_start_of_the_interrupted_epoch"
    ),
    "test_best_case_epoch": (
        "reads Keras' private `_current_epoch`; checked by "
        f"{OURS}test_keras_epoch_case_resumes_after_the_last_complete_epoch"
    ),
    "test_backup_corrupted": (
        "reads Keras' private `_current_epoch` and file paths (`_weights_path`, "
        "`_prev_weights_path`, ...); checked by "
        f"{OURS}test_keras_corrupted_case_with_double_checkpoint"
    ),
}


def load_keras_test_case():
    """Keras' test case class, with `callbacks.BackupAndRestore` made ours."""
    spec = importlib.util.spec_from_file_location("keras_backup_and_restore_test", KERAS_TEST_FILE)
    module = importlib.util.module_from_spec(spec)
    with warnings.catch_warnings():
        # Its `requires_trainable_backend` mark is registered by Keras' own conftest.
        warnings.simplefilter("ignore", pytest.PytestUnknownMarkWarning)
        spec.loader.exec_module(module)
    assert isinstance(getattr(module, "callbacks", None), types.ModuleType), (
        "Keras' test file no longer reaches the callback as `callbacks.BackupAndRestore`: "
        "update the substitution in this file."
    )
    public = {name: getattr(keras.callbacks, name) for name in dir(keras.callbacks)}
    module.callbacks = types.SimpleNamespace(
        **{name: value for name, value in public.items() if not name.startswith("_")},
    )
    module.callbacks.BackupAndRestore = kt.SafeBackupAndRestore
    return getattr(module, TEST_CASE)


def keras_test_names():
    if not KERAS_TEST_FILE.is_file():
        return []
    return list(unittest.TestLoader().getTestCaseNames(load_keras_test_case()))


NAMES = keras_test_names()


@pytest.fixture(scope="module")
def keras_test_case():
    if not KERAS_TEST_FILE.is_file():
        pytest.skip(f"the installed keras wheel has no {KERAS_TEST_FILE}")
    return load_keras_test_case()


def test_the_keras_test_file_is_there_and_the_deselections_are_current(keras_test_case):
    names = unittest.TestLoader().getTestCaseNames(keras_test_case)
    assert set(DESELECTED) <= set(names), set(DESELECTED) - set(names)
    assert set(names) - set(DESELECTED), "every Keras test is deselected: nothing is proven"


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(name, marks=pytest.mark.skip(reason=DESELECTED[name]))
        if name in DESELECTED
        else name
        for name in NAMES
    ],
)
def test_keras_backup_and_restore_test(keras_test_case, name):
    filtering = keras.config.is_traceback_filtering_enabled()
    result = unittest.TestResult()
    try:
        keras_test_case(name).run(result)  # Its setUp turns traceback filtering off.
    finally:
        if filtering:
            keras.config.enable_traceback_filtering()
    problems = [text for _, text in result.errors + result.failures]
    assert not problems, "\n".join(problems)
    assert result.testsRun == 1 and not result.skipped, result.skipped
