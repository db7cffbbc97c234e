"""Where a one-pass cache puts its batches: memory, then raw files on disk.

`FeatureCache` and the frozen-prefix cache of a `FreezeSchedule` stage both
stream the batches of one pass into a `Sink` and read the whole columns back:
numpy arrays from memory, or `np.memmap`s of raw `.bin` files (one per array,
no header) once the batches outgrow `memory_limit_bytes`. Past
`disk_limit_bytes` the sink gives up with `CacheTooLarge`, so that the caller
can say so and train without a cache.
"""

from __future__ import annotations

import math
import os
import pathlib
import shutil

import keras
import numpy as np

# Share of a disk's free space a cache may fill when no disk limit is given.
FREE_SPACE_SHARE = 0.9


class CacheTooLarge(RuntimeError):
    """The cached batches would pass the memory and disk limits."""


class MismatchedBatches(ValueError):
    """Batches of one part differ in shape beyond their first axis."""


class Sink:
    """Collects batches of named parts (`features`, `labels`, `weights`).

    Args:
        directory: the folder for files once memory is full; `None` keeps
            everything in memory.
        name: the files' common prefix, unique among the caches sharing
            `directory`.
        memory_limit_bytes: bytes kept in memory before the batches move to
            disk (`0`: straight to disk; `math.inf`: never).
        disk_limit_bytes: bytes allowed on disk; `None` allows 90 % of the
            disk's free space.
    """

    def __init__(
        self,
        directory=None,
        name: str = "cache",
        memory_limit_bytes: float = math.inf,
        disk_limit_bytes: float | None = None,
    ):
        self.directory = None if directory is None else pathlib.Path(directory)
        self.prefix = name
        self.memory_limit_bytes = memory_limit_bytes
        self.disk_limit_bytes = disk_limit_bytes
        self.parts: dict = {}
        self.structure: dict = {}
        self.files: dict = {}
        self.shapes: dict = {}
        self.nbytes = 0
        self.on_disk = False

    def add(self, **parts) -> None:
        """Adds one batch of each named part (`None` parts are skipped)."""
        for kind, structure in parts.items():
            if structure is None:
                continue
            self.structure[kind] = structure
            leaves = [np.asarray(leaf) for leaf in keras.tree.flatten(structure)]
            self._check_shapes(kind, leaves)
            self._make_room(sum(leaf.nbytes for leaf in leaves))
            if self.on_disk:
                self._write(kind, leaves)
            else:
                self.parts.setdefault(kind, []).append(leaves)

    def expect(self, total_bytes: float) -> None:
        """Places the cache for `total_bytes` in all, known ahead: on disk at
        once if it will not fit in memory, `CacheTooLarge` if not on disk."""
        if total_bytes > self.memory_limit_bytes:
            self._check_disk_room(total_bytes)
            self._spill()

    def get(self, kind: str):
        """The whole column of a part, as arrays (or memmaps) in its structure."""
        if kind not in self.structure:
            return None
        if not self.on_disk:
            columns = zip(*self.parts[kind])
            leaves = [np.concatenate(column, axis=0) for column in columns]
        else:
            leaves = [self._memmap(name) for name in self.files if f"_{kind}_" in name]
        return keras.tree.pack_sequence_as(self.structure[kind], leaves)

    def delete(self) -> None:
        """Removes the sink's files (arrays already read stay readable on POSIX)."""
        for name, (handle, _, _) in self.files.items():
            handle.close()
            (self.directory / f"{name}.bin").unlink(missing_ok=True)
        self.files = {}
        self.parts = {}

    def _check_shapes(self, kind: str, leaves: list) -> None:
        shapes = [leaf.shape[1:] for leaf in leaves]
        first = self.shapes.setdefault(kind, shapes)
        if shapes != first:
            raise MismatchedBatches(
                f"{kind} batches differ in shape: {[(None, *s) for s in first]} and then "
                f"{[(None, *s) for s in shapes]}"
            )

    def _make_room(self, nbytes: int) -> None:
        self.nbytes += nbytes
        if not self.on_disk and self.nbytes > self.memory_limit_bytes:
            self._check_disk_room(self.nbytes)
            self._spill()
        elif self.on_disk:
            self._check_disk_room(self.nbytes)

    def _check_disk_room(self, nbytes: float) -> None:
        if self.directory is None:
            raise CacheTooLarge(
                f"{nbytes / 2**20:,.0f} MB do not fit in the "
                f"{self.memory_limit_bytes / 2**20:,.0f} MB memory limit, and no folder "
                "was given to continue on disk"
            )
        limit = self.disk_limit_bytes
        if limit is None:
            limit = FREE_SPACE_SHARE * _free_bytes(self.directory)
        if nbytes > limit:
            raise CacheTooLarge(
                f"{nbytes / 2**20:,.0f} MB pass the memory limit "
                f"({self.memory_limit_bytes / 2**20:,.0f} MB) and the disk limit "
                f"({limit / 2**20:,.0f} MB in {self.directory})"
            )

    def _spill(self) -> None:
        """Moves the batches held in memory to disk; later batches follow."""
        held, self.parts = self.parts, {}
        self.directory.mkdir(parents=True, exist_ok=True)
        self.on_disk = True
        for kind, batches in held.items():
            for leaves in batches:
                self._write(kind, leaves)

    def _write(self, kind: str, leaves: list) -> None:
        for position, leaf in enumerate(leaves):
            name = f"{self.prefix}_{kind}_{position}"
            if name not in self.files:
                self.files[name] = [open(self.directory / f"{name}.bin", "wb"), leaf, 0]
            handle, _, rows = self.files[name]
            handle.write(np.ascontiguousarray(leaf).tobytes())
            self.files[name][2] = rows + len(leaf)

    def _memmap(self, name: str):
        handle, example, rows = self.files[name]
        handle.close()
        shape = (rows, *example.shape[1:])
        return np.memmap(self.directory / f"{name}.bin", dtype=example.dtype, mode="r", shape=shape)


def _free_bytes(directory: pathlib.Path) -> int:
    existing = directory
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    return shutil.disk_usage(existing).free


def cache_file_prefix(index) -> str:
    """A file prefix unique to this process and `index`."""
    return f"cache_{os.getpid()}_{index}"
