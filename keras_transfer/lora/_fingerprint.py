"""Digests of variable values, to tell one set of base weights from another."""

from __future__ import annotations

import hashlib
import json

import keras
import numpy as np


def to_numpy(variable) -> np.ndarray:
    """A variable's value as a numpy array of a dtype numpy can store: half and
    bfloat16 floats widen to float32 (exactly), so every backend agrees."""
    value = np.asarray(keras.ops.convert_to_numpy(variable.value))
    if value.dtype.name in ("bfloat16", "float16"):
        value = value.astype(np.float32)
    return np.ascontiguousarray(value)


def variable_digest(variable) -> str:
    """The SHA-256 of a variable's shape and values."""
    value = to_numpy(variable)
    digest = hashlib.sha256(f"{value.dtype.str}{value.shape}".encode())
    digest.update(value.tobytes())
    return digest.hexdigest()


def base_entries(variables) -> list[list]:
    """`[path, shape, digest]` for each variable, in order."""
    return [[v.path, list(v.shape), variable_digest(v)] for v in variables]


def fingerprint(entries) -> str:
    """One digest over `base_entries`: the identity of a set of base weights."""
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()
