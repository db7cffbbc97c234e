"""`PrefixCache`: train the top of a partly frozen model on its frozen prefix's
activations, computed once; and the stage-by-stage cache of
`kt.FreezeSchedule(cache_frozen=True)`."""

from __future__ import annotations

import itertools
import warnings

import keras

from keras_transfer._checks import check_integer, check_number
from keras_transfer._keras_internals.training import compile_like
from keras_transfer.cache import cache_dir
from keras_transfer.features._cached_batches import CachedBatches, split_for_validation
from keras_transfer.features._graph_cut import CutUnsupported, check_plain_model, cut_frozen_prefix
from keras_transfer.features._prefix_pass import (
    UncacheableData,
    check_replayable,
    run_prefix,
)
from keras_transfer.features._relayed_run import RelayedRun
from keras_transfer.features._sink import CacheTooLarge, Sink, cache_file_prefix
from keras_transfer.features.pipeline import is_dataset
from keras_transfer.freezing.freeze import resolve_group_count
from keras_transfer.freezing.trainable_set import follow_trainable
from keras_transfer.groups import layer_groups

DEFAULT_MEMORY_LIMIT_MB = 2048
_SINK_NUMBERS = itertools.count()
# Why a stage trains without the cache, said in one line before it does.
_FALLBACKS = (CutUnsupported, UncacheableData, CacheTooLarge)


class PrefixCache:
    """Trains a partly frozen model's trainable top on its frozen prefix's
    activations, computed once.

    While the bottom layer groups are frozen, running them at every step of
    every epoch only recomputes the same activations. `PrefixCache` cuts the
    compiled model where its frozen groups end (anywhere, inside a nested
    KerasHub backbone too: there the cut carries the hidden states and the
    padding mask across), runs the prefix once over the data in inference
    mode, and trains the top on the cached activations with the model's own
    optimizer, loss and metrics, and the same batches, shuffling and
    validation. The top's layers are the model's layers: afterwards `model`
    is trained as if `fit` had run on it with its prefix in inference mode.

    Frozen layers run in inference mode in the cache (dropout off,
    BatchNormalization on its moving statistics), which is what frozen means
    in this library. Activations stay in memory up to `memory_limit_mb`, then
    go to raw files in `directory`, read back memory-mapped. Callbacks see the
    whole model (backups and checkpoints hold all of it). Use
    `kt.FreezeSchedule(..., cache_frozen=True).fit(...)` to cache every stage
    of gradual unfreezing; `kt.FeatureCache` for a head on a frozen nested
    backbone.

    Refuses (with the reason) a model that is not a plain Functional or
    Sequential model, a trainable layer feeding a frozen one, random layers
    other than dropout in the prefix, and data that a second pass would not
    repeat (a generator, a randomly augmented or endless `tf.data` pipeline).

    Args:
        model: a compiled Functional or Sequential model, frozen below its
            trainable groups (`kt.freeze(model, n)`).
        groups: optional grouping, as for `kt.layer_groups`.
        directory: the folder for activations past the memory limit; defaults
            to `kt.cache_dir("prefix_cache")`. Files are deleted after `fit`.
        memory_limit_mb: megabytes of activations kept in memory. Defaults
            to 2048.
        disk_limit_mb: megabytes allowed on disk; `None` (default) allows
            90 % of the disk's free space. Past both limits `fit` raises.
        batch_size: batch size of the prefix pass over arrays when `fit` is
            given none. Defaults to 32.
        verbose: 1 (default) shows a progress bar for the prefix pass; 0 is
            silent.

    Example:

    >>> import numpy as np
    >>> import keras
    >>> import keras_transfer as kt
    >>> from keras_transfer.features.prefix_cache import PrefixCache
    >>> model = keras.Sequential([
    ...     keras.Input((4,)),
    ...     keras.layers.Dense(8, name="body"),
    ...     keras.layers.Dense(1, name="head"),
    ... ])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> _ = kt.freeze(model, trainable_groups=1)
    >>> cache = PrefixCache(model, verbose=0)
    >>> cache.frozen_layers, [tuple(t.shape) for t in cache.prefix.outputs]
    (['body'], [(None, 8)])
    >>> history = cache.fit(np.ones((16, 4)), np.ones((16, 1)), epochs=2, verbose=0)
    """

    def __init__(
        self,
        model: keras.Model,
        groups=None,
        directory=None,
        memory_limit_mb: float = DEFAULT_MEMORY_LIMIT_MB,
        disk_limit_mb: float | None = None,
        batch_size: int = 32,
        verbose: int = 1,
    ):
        if not getattr(model, "compiled", False):
            raise ValueError(
                "PrefixCache trains the top with the model's compile settings: call "
                "`model.compile(optimizer, loss, metrics)` first."
            )
        self.model = model
        self.plan = layer_groups(model, groups)
        self.directory = directory
        self.memory_limit_mb = check_number(
            memory_limit_mb, "memory_limit_mb", "megabytes kept in memory", low=0, allow_inf=True
        )
        self.disk_limit_mb = disk_limit_mb
        if disk_limit_mb is not None:
            check_number(disk_limit_mb, "disk_limit_mb", "megabytes on disk", low=0, allow_inf=True)
        self.batch_size = check_integer(batch_size, "batch_size", "examples per prefix pass", low=1)
        self.verbose = verbose
        cut = cut_frozen_prefix(model, self.plan)
        if cut is None:
            raise CutUnsupported(
                f"no layer group of '{model.name}' is frozen, so there is no prefix to "
                "cache: freeze the bottom groups first (`kt.freeze(model, n)`)"
            )
        self.prefix, self.top = cut.prefix, cut.top
        self.frozen_layers = cut.frozen_layers
        compile_like(self.top, model)

    def fit(
        self,
        x=None,
        y=None,
        validation_data=None,
        epochs: int = 1,
        initial_epoch: int = 0,
        callbacks=None,
        verbose="auto",
        **fit_kwargs,
    ) -> keras.callbacks.History:
        """Runs the prefix once over `x` (and `validation_data`), then trains
        the top for `epochs`; other arguments are `Model.fit`'s.

        `x` is arrays (or a dict or list of them) with labels `y`, or a
        finite `tf.data.Dataset`. Returns the `History`.
        """
        check_replayable(x, fit_kwargs.get("steps_per_epoch"))
        run = RelayedRun(self.model, list(callbacks or []), epochs, verbose)
        begin = run.begin(initial_epoch)
        self._train(run, begin, epochs, x, y, validation_data, verbose, fit_kwargs)
        return run.end()

    def _train(self, run, begin, end, x, y, validation_data, verbose, fit_kwargs) -> None:
        """Caches the splits, then trains the top for epochs `begin` to `end - 1`."""
        sinks = []
        optimizer = self.model.optimizer
        try:
            arguments = self._cached_fit_arguments(x, y, validation_data, fit_kwargs, sinks)
            # The optimizer pairs gradients with slots in the order of the
            # model it trains: the top's, then the whole model's again.
            follow_trainable(optimizer, self.top.trainable_variables)
            run.fit(self.top, begin, end, verbose=verbose, **arguments)
        finally:
            follow_trainable(optimizer, self.model.trainable_variables)
            for sink in sinks:
                sink.delete()

    def _cached_fit_arguments(self, x, y, validation_data, fit_kwargs, sinks) -> dict:
        """`fit` arguments that train the top on the cached splits as
        `fit_kwargs` would train the model on the raw ones."""
        arguments = dict(fit_kwargs)
        pass_size = arguments.get("batch_size") or self.batch_size
        train = self._run(x, y, arguments.pop("sample_weight", None), pass_size, sinks, "training")
        batch_size = train.batch_size or pass_size
        shuffle = train.reshuffled if train.batch_size else arguments.get("shuffle", True)
        validation = None
        if validation_data is not None:
            val_x, val_y, val_weight = _unpack(validation_data)
            check_replayable(val_x)
            val_size = arguments.get("validation_batch_size") or batch_size
            validation = self._run(val_x, val_y, val_weight, val_size, sinks, "validation")
        parts = (train.x, train.y, train.sample_weight)
        if not train.on_disk and not (validation is not None and validation.on_disk):
            arguments.update(x=parts[0], y=parts[1], sample_weight=parts[2])
            arguments.update(batch_size=batch_size, shuffle=shuffle)
            if validation is not None:
                arguments["validation_data"] = validation.parts
                arguments["validation_batch_size"] = validation.batch_size or val_size
            return arguments
        # On disk: read a batch at a time (see `CachedBatches`).
        for key in ("batch_size", "shuffle", "validation_batch_size"):
            arguments.pop(key, None)
        held_out = None
        if arguments.get("validation_split"):
            parts, held_out = split_for_validation(parts, arguments.pop("validation_split"))
        # The batches shuffle themselves; Keras would shuffle their order.
        arguments.update(x=CachedBatches(*parts, batch_size, shuffle), shuffle=False)
        if validation is not None or held_out is not None:
            held_out = validation.parts if validation is not None else held_out
            val_size = (validation.batch_size if validation is not None else None) or (
                fit_kwargs.get("validation_batch_size") or batch_size
            )
            arguments["validation_data"] = CachedBatches(*held_out, val_size, False)
        return arguments

    def _run(self, x, y, sample_weight, batch_size, sinks, split):
        used = sum(sink.nbytes for sink in sinks)
        sink = Sink(
            self.directory
            if self.directory is not None
            else cache_dir("prefix_cache", create=False),
            cache_file_prefix(f"prefix_{next(_SINK_NUMBERS)}"),
            memory_limit_bytes=max(0.0, self.memory_limit_mb * 2**20 - used),
            disk_limit_bytes=None
            if self.disk_limit_mb is None
            else self.disk_limit_mb * 2**20 - used,
        )
        sinks.append(sink)
        verbose = 1 if self.verbose == "auto" else self.verbose
        if verbose:
            print(
                f"PrefixCache: running the frozen layers ({_shown(self.frozen_layers)}) once "
                f"over the {split} data."
            )
        return run_prefix(self.prefix, x, y, sample_weight, batch_size, sink, verbose)


def fit_in_stages(
    schedule,
    x=None,
    y=None,
    validation_data=None,
    epochs: int = 1,
    initial_epoch: int = 0,
    callbacks=None,
    verbose="auto",
    **fit_kwargs,
) -> keras.callbacks.History:
    """Runs a `FreezeSchedule`'s stages, each on its frozen prefix's cache.

    What `FreezeSchedule.fit` does with `cache_frozen=True`: at the start of
    each stage the model is cut at the stage's frozen groups, the prefix runs
    once over the data and the stage's epochs train the top (`PrefixCache`);
    the next stage cuts again. Where a cache cannot apply, a line says why
    and the stage (or, for reasons that hold for every stage, the whole run)
    trains uncached.
    """
    model = schedule.model
    callbacks = [callback for callback in (callbacks or []) if callback is not schedule]
    fit_args = dict(fit_kwargs, x=x, y=y, validation_data=validation_data)
    reason = _reason_for_the_whole_run(schedule, model, x, validation_data, fit_kwargs)
    if reason is not None:
        _warn(f"training without the frozen-prefix cache: {reason}.")
        return model.fit(
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=[schedule, *callbacks],
            verbose=verbose,
            **fit_args,
        )
    run = RelayedRun(model, [schedule, *callbacks], epochs, verbose)
    start = run.begin(initial_epoch)
    for begin, end in stage_spans(schedule, start, epochs):
        schedule.on_epoch_begin(begin)  # Enters the stage.
        _train_stage(schedule, run, begin, end, verbose, fit_args)
        if run.stopped:
            break
    return run.end()


def stage_spans(schedule, start: int, epochs: int) -> list[tuple[int, int]]:
    """`(first epoch, end epoch)` of each stage from `start` on; epochs with
    the same number of trainable groups form one stage.

    >>> from types import SimpleNamespace
    >>> schedule = SimpleNamespace(
    ...     plan=[0, 1, 2], stage_for=lambda e: {0: 1, 1: 1, 2: 2}.get(e, "all"))
    >>> stage_spans(schedule, 0, 5)
    [(0, 2), (2, 3), (3, 5)]
    """
    counts = [_trainable_count(schedule, epoch) for epoch in range(epochs)]
    spans: list[tuple[int, int]] = []
    for epoch in range(start, epochs):
        if spans and counts[epoch] == counts[epoch - 1]:
            spans[-1] = (spans[-1][0], epoch + 1)
        else:
            spans.append((epoch, epoch + 1))
    return spans


def _trainable_count(schedule, epoch: int) -> int:
    return resolve_group_count(schedule.stage_for(epoch), len(schedule.plan))


def _train_stage(schedule, run, begin, end, verbose, fit_args) -> None:
    model = schedule.model
    if _trainable_count(schedule, begin) == len(schedule.plan):
        run.fit(model, begin, end, verbose=verbose, **fit_args)  # Nothing frozen.
        return
    fit_kwargs = dict(fit_args)
    x, y, validation_data = (fit_kwargs.pop(key) for key in ("x", "y", "validation_data"))
    try:
        cache = PrefixCache(
            model,
            schedule.plan,
            directory=schedule.cache_dir,
            memory_limit_mb=schedule.cache_memory_limit_mb,
            disk_limit_mb=schedule.cache_disk_limit_mb,
            batch_size=fit_kwargs.get("batch_size") or 32,
            verbose=(1 if verbose == "auto" else verbose) if schedule.verbose else 0,
        )
        cache._train(run, begin, end, x, y, validation_data, verbose, fit_kwargs)
    except _FALLBACKS as reason:
        _warn(f"epochs {begin} to {end - 1} train without the frozen-prefix cache: {reason}.")
        run.fit(model, begin, end, verbose=verbose, **fit_args)


def _reason_for_the_whole_run(schedule, model, x, validation_data, fit_kwargs) -> str | None:
    if schedule.unit != "epoch":
        return f"unit={schedule.unit!r} changes stages inside an epoch"
    if fit_kwargs.get("validation_split") and is_dataset(x):
        return "`validation_split` needs arrays"
    try:
        check_plain_model(model)
        check_replayable(x, fit_kwargs.get("steps_per_epoch"))
        if validation_data is not None:
            check_replayable(_unpack(validation_data)[0])
    except (CutUnsupported, UncacheableData) as reason:
        return str(reason)
    return None


def _unpack(validation_data):
    if is_dataset(validation_data):
        return validation_data, None, None
    return keras.utils.unpack_x_y_sample_weight(tuple(validation_data))


def _warn(message: str) -> None:
    warnings.warn(f"FreezeSchedule: {message}", stacklevel=4)


def _shown(names: list) -> str:
    return (
        ", ".join(names) if len(names) <= 3 else f"{names[0]} ... {names[-1]}, {len(names)} layers"
    )
