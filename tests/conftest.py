"""Test set-up shared by every test: a fresh Keras session and seed."""

import keras
import pytest


@pytest.fixture(autouse=True)
def _fresh_keras_state():
    keras.backend.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


# The slowest test files, slowest first (seconds on CI's 2 cores, TensorFlow).
# With `--dist loadfile` each file runs on one worker: started last, a long
# file leaves the other worker idle for its whole length; started first, the
# short files fill in around it.
SLOWEST_FILES_FIRST = (
    "test_tutorials.py",  # ~600-900
    "test_cli.py",  # ~270
    "test_multi_process.py",  # JAX only, ~140
    "test_prefix_cache.py",  # ~115-175
    "test_saved_model.py",  # ~150
    "test_data_parallel.py",  # ~80-140
    "test_resume.py",  # ~60-100
)


def pytest_collection_modifyitems(config, items):
    rank = {name: index for index, name in enumerate(SLOWEST_FILES_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # Stable: files keep order.
