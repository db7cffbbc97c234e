"""`SafeBackupAndRestore`: `BackupAndRestore` with all-or-nothing checkpoints."""

from __future__ import annotations

import hashlib
import json
import numbers
import os
import re
import shutil
import warnings

import keras
import numpy as np

from keras_transfer._checks import check_integer
from keras_transfer._keras_internals.layers import flatten_layers
from keras_transfer._keras_internals.training import set_initial_epoch
from keras_transfer.callbacks._process_coordination import (
    barrier,
    is_writer,
    same_in_every_process,
    this_process_only,
)
from keras_transfer.groups.layer_variables import has_lora

# The files of backup N: `checkpoint-N.json`, `checkpoint-N.weights.h5` and,
# for a model with LoRA, `checkpoint-N.lora.npz`.
_BACKUP_FILE = re.compile(r"^checkpoint-(\d{6,})\.(json|weights\.h5|lora\.npz)$")
_FORMAT = "keras_transfer.backup/1"


@keras.saving.register_keras_serializable(package="keras_transfer")
class SafeBackupAndRestore(keras.callbacks.Callback):
    """Backs up training and resumes from the last complete backup, even
    after the process was killed while writing one.

    A drop-in for `keras.callbacks.BackupAndRestore` for runs on preemptible
    machines: it takes the same arguments and resumes at the same place.
    Keras' callback overwrites `latest.weights.h5` and then
    `training_metadata.json` in place: a kill between the two writes leaves
    the new weights beside the old epoch number, and the resumed run
    silently trains one epoch twice from weights that already saw it (a
    valid but wrong model). Here every backup is a new pair of files,
    `checkpoint-NNNNNN.weights.h5` and a manifest `checkpoint-NNNNNN.json`
    that records the epoch to resume at, how many of that epoch's batches the
    weights have seen, and the SHA-256 of the weights file. The manifest is
    written last, flushed to disk and renamed into place atomically, so a
    backup exists only once it is complete; on resume, manifests whose
    weights file is missing or does not match its hash are skipped (with a
    warning) in favour of the newest intact backup. Older backups are deleted
    only after a newer one is complete.

    The weights file holds the model's weights and the optimizer's state
    (its iteration count, so a learning-rate schedule resumes in place).
    Keras' LoRA layers write their kernel with the factors merged in and no
    factors (`Dense.save_own_variables`); for a model with LoRA enabled a
    third file, `checkpoint-NNNNNN.lora.npz` (hashed in the manifest too),
    keeps those layers' variables as they are, so a LoRA run resumes with the
    same base kernels and factors.
    `kt.FreezeSchedule` and `kt.DomainAdaptationSchedule` derive their stage
    from the epoch index, so they resume in the right stage; keep the data
    order deterministic (`shuffle=False` or a seeded dataset) for a resumed
    run to repeat the uninterrupted one exactly.

    Keras resumes `fit` at the start of an epoch. A backup taken at an epoch
    end therefore resumes exactly where training stopped; a backup taken
    mid-epoch (`save_freq=N`) resumes, as in Keras, at the start of the
    epoch it was taken in, from weights and optimizer state that have
    already seen that epoch's first batches, which are then trained on again.
    For a resume that repeats nothing, keep `save_freq="epoch"` and, for long
    epochs, pass `steps_per_epoch` with a repeating dataset to make epochs
    shorter.

    Args:
        backup_dir: a local folder for the backups; created if missing. Use
            one folder per training run, holding nothing else.
        save_freq: when to back up. `"epoch"` (the default): at every epoch
            end. An integer `N >= 1`: after every `N` batches, counted across
            epochs as Keras counts them, and also at every epoch end (Keras
            does not back up there, so after a backup at an epoch's last
            batch it replays that whole epoch; the epoch-end backup here
            resumes at the next one). `False`: never back up during
            training, as Keras documents; the callback then only restores
            from backups already in `backup_dir` (and deletes them at the end
            if `delete_checkpoint`).
        double_checkpoint: accepted for compatibility with Keras, where it
            keeps the previous backup beside the current one so that a
            corrupted current one can be skipped. Backups here always work
            that way (see `keep`); `True` only requires `keep >= 2`.
            Defaults to `False`.
        delete_checkpoint: delete the folder once `fit` completes. Defaults
            to `True`, like Keras.
        keep: how many complete backups to keep (at least 1; default 2).

    Example:

    >>> import tempfile
    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> backup = kt.SafeBackupAndRestore(tempfile.mkdtemp(), delete_checkpoint=False)
    >>> _ = model.fit(np.ones((4, 2)), np.ones((4, 1)), epochs=2, verbose=0,
    ...               callbacks=[backup])
    >>> backup.latest_epoch()  # Two epochs done: a rerun would start at epoch 2.
    2
    """

    def __init__(
        self,
        backup_dir: str,
        save_freq: str | int | bool = "epoch",
        double_checkpoint: bool = False,
        delete_checkpoint: bool = True,
        keep: int = 2,
    ):
        super().__init__()
        if backup_dir is None or not os.fspath(backup_dir):
            raise ValueError(
                # Keras' own words first, so code that matches them keeps working.
                f"Empty `backup_dir` argument passed (got {backup_dir!r}): pass the path "
                "of a folder for the backups, one folder per training run."
            )
        self.backup_dir = os.fspath(backup_dir)
        self.save_freq = _check_save_freq(save_freq)
        self.double_checkpoint = _check_flag(double_checkpoint, "double_checkpoint")
        self.delete_checkpoint = _check_flag(delete_checkpoint, "delete_checkpoint")
        self.keep = check_integer(keep, "keep", "complete backups kept", low=1)
        if self.double_checkpoint and self.keep < 2:
            raise ValueError(
                "`double_checkpoint=True` keeps the previous backup beside the newest, "
                f"but `keep={self.keep}` keeps only the newest: pass `keep=2` (or more), "
                "or leave `double_checkpoint=False`."
            )
        self._epoch = 0
        self._last_batch = -1
        self._batches_since_backup = 0

    def on_train_begin(self, logs=None):
        self._batches_since_backup = 0
        if not self.model.built:
            raise ValueError(
                f"SafeBackupAndRestore needs a built model; model '{self.model.name}' "
                "is not. Build it first, e.g. by calling it on a batch of data."
            )
        manifest = self._newest_intact_backup()
        same_in_every_process(
            -1 if manifest is None else manifest["number"],
            f"the backup in {self.backup_dir} to resume from (-1: none)",
            "Give every process the same `backup_dir`, on storage they all see.",
        )
        if manifest is None:
            return
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        lora_values = None
        if manifest.get("lora_sha256") is not None:
            lora_values = _read_lora_file(self.model, self._lora_path(manifest["number"]))
        self.model.load_weights(self._weights_path(manifest["number"]))
        if lora_values is not None:
            _assign(_lora_variables(self.model), lora_values)
        set_initial_epoch(self.model, manifest["epoch"])

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch
        self._last_batch = -1

    def on_train_batch_end(self, batch, logs=None):
        if isinstance(self.save_freq, str) or self.save_freq is False:
            return
        # With `steps_per_execution > 1`, Keras reports only the last batch
        # of each group it ran, so count the batches between reports.
        self._batches_since_backup += batch - self._last_batch
        self._last_batch = batch
        if self._batches_since_backup >= self.save_freq:
            self._batches_since_backup = 0
            self._save(self._epoch, batches_done=batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        if self.save_freq is not False:
            self._save(epoch + 1, batches_done=0)

    def on_train_end(self, logs=None):
        if self.delete_checkpoint and is_writer() and os.path.isdir(self.backup_dir):
            shutil.rmtree(self.backup_dir)

    def latest_epoch(self) -> int | None:
        """The epoch a resumed `fit` would start at, or `None` if no backup."""
        manifest = self._newest_intact_backup(warn=False)
        return None if manifest is None else manifest["epoch"]

    def _save(self, epoch: int, batches_done: int) -> None:
        # In a multi-process job process 0 writes the backup and the others
        # wait until it is complete: every process then agrees on it.
        if is_writer():
            with this_process_only():
                self._write(epoch, batches_done)
        barrier("keras_transfer.SafeBackupAndRestore")

    def _write(self, epoch: int, batches_done: int) -> None:
        """Writes a backup that resumes at `epoch`, whose weights have seen
        `batches_done` of that epoch's batches."""
        os.makedirs(self.backup_dir, exist_ok=True)
        existing = self._backup_numbers()
        number = (existing[-1] + 1) if existing else 0
        weights_path = self._weights_path(number)
        self.model.save_weights(weights_path, overwrite=True)
        _flush_to_disk(weights_path)
        lora_sha256 = None
        if _lora_variables(self.model):
            lora_path = self._lora_path(number)
            _write_lora_file(self.model, lora_path)
            _flush_to_disk(lora_path)
            lora_sha256 = _sha256(lora_path)
        manifest = {
            "format": _FORMAT,
            "number": number,
            "epoch": epoch,
            "batches_done": batches_done,
            "weights_sha256": _sha256(weights_path),
            "lora_sha256": lora_sha256,
        }
        manifest_path = self._manifest_path(number)
        partial_path = manifest_path + ".partial"
        with open(partial_path, "w") as file:
            json.dump(manifest, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(partial_path, manifest_path)
        _flush_to_disk(self.backup_dir)
        self._delete_old(number)

    def _newest_intact_backup(self, warn: bool = True) -> dict | None:
        if not os.path.isdir(self.backup_dir):
            return None
        for number in reversed(self._backup_numbers()):
            manifest, problem = self._read_manifest(number)
            if manifest is not None:
                return manifest
            if warn:
                warnings.warn(
                    f"SafeBackupAndRestore: skipping backup {number} in "
                    f"{self.backup_dir}: {problem}; trying an older one.",
                    stacklevel=2,
                )
        return None

    def _read_manifest(self, number: int):
        try:
            with open(self._manifest_path(number)) as file:
                manifest = json.load(file)
        except (OSError, ValueError) as error:
            return None, f"unreadable manifest ({error})"
        if manifest.get("format") != _FORMAT or manifest.get("number") != number:
            return None, "not a SafeBackupAndRestore manifest"
        weights_path = self._weights_path(number)
        if not os.path.exists(weights_path):
            return None, "its weights file is missing"
        if _sha256(weights_path) != manifest.get("weights_sha256"):
            return None, "its weights file does not match the manifest's hash"
        lora_sha256 = manifest.get("lora_sha256")
        if lora_sha256 is not None:
            lora_path = self._lora_path(number)
            if not os.path.exists(lora_path):
                return None, "its LoRA file is missing"
            if _sha256(lora_path) != lora_sha256:
                return None, "its LoRA file does not match the manifest's hash"
        return manifest, None

    def _backup_numbers(self) -> list[int]:
        if not os.path.isdir(self.backup_dir):
            return []
        names = (_BACKUP_FILE.match(name) for name in os.listdir(self.backup_dir))
        return sorted(int(match.group(1)) for match in names if match and match.group(2) == "json")

    def _delete_old(self, newest: int) -> None:
        keep_from = newest - self.keep + 1
        for name in os.listdir(self.backup_dir):
            match = _BACKUP_FILE.match(name)
            if match and int(match.group(1)) < keep_from:
                os.remove(os.path.join(self.backup_dir, name))

    def _manifest_path(self, number: int) -> str:
        return os.path.join(self.backup_dir, f"checkpoint-{number:06d}.json")

    def _weights_path(self, number: int) -> str:
        return os.path.join(self.backup_dir, f"checkpoint-{number:06d}.weights.h5")

    def _lora_path(self, number: int) -> str:
        return os.path.join(self.backup_dir, f"checkpoint-{number:06d}.lora.npz")

    def get_config(self):
        return {
            "backup_dir": self.backup_dir,
            "save_freq": self.save_freq,
            "double_checkpoint": self.double_checkpoint,
            "delete_checkpoint": self.delete_checkpoint,
            "keep": self.keep,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def _lora_variables(model) -> list:
    """The variables of the layers with LoRA enabled, in layer order.

    By position, as Keras' own weights files: paths hold layer names, which
    differ between two instances of one model.
    """
    return [
        variable
        for layer in flatten_layers(model)
        if has_lora(layer)
        for variable in layer.variables
    ]


def _write_lora_file(model, path: str) -> None:
    values = [keras.ops.convert_to_numpy(variable) for variable in _lora_variables(model)]
    with open(path, "wb") as file:
        np.savez(file, *values)


def _read_lora_file(model, path: str) -> list:
    """The LoRA layers' saved values in layer order, checked against `model`."""
    variables = _lora_variables(model)
    with np.load(path, allow_pickle=False) as saved:
        values = [saved[f"arr_{index}"] for index in range(len(saved.files))]
    problem = None
    if len(values) != len(variables):
        problem = f"it holds {len(values)} LoRA-layer variables, the model {len(variables)}"
    for variable, value in zip(variables, values):
        if problem is None and tuple(value.shape) != tuple(variable.shape):
            problem = (
                f"variable '{variable.path}' has shape {tuple(value.shape)} there, "
                f"{tuple(variable.shape)} here"
            )
    if problem is not None:
        raise ValueError(
            f"The backup's LoRA file {path} does not fit model '{model.name}': {problem}. "
            "Resume with the model the backup was made from (the same layers, with LoRA "
            "enabled the same way), or use another `backup_dir`."
        )
    return values


def _assign(variables: list, values: list) -> None:
    for variable, value in zip(variables, values):
        variable.assign(value)


def _check_save_freq(save_freq):
    """`"epoch"`, `False` or an integer >= 1, else a ValueError as in Keras."""
    if save_freq == "epoch" and isinstance(save_freq, str):
        return save_freq
    if save_freq is False:
        return False
    is_integer = not isinstance(save_freq, bool) and isinstance(save_freq, numbers.Integral)
    if not is_integer or save_freq < 1:
        raise ValueError(
            f'Invalid value for `save_freq`: {save_freq!r}. Pass "epoch" to back up at '
            "every epoch end, an integer N >= 1 to back up every N batches, or False "
            "to only restore."
        )
    return int(save_freq)


def _check_flag(value, name: str) -> bool:
    if value not in (True, False):
        raise TypeError(f"`{name}` must be True or False, got {value!r}.")
    return bool(value)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _flush_to_disk(path: str) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
