"""Read tensors from a legacy (non-zip) PyTorch `.pth` file, without torch.

PyTorch before 1.6 (and `torch.save(..., _use_new_zipfile_serialization=False)`
since) writes one stream: five pickles and then raw bytes. In order:

1. the magic number `0x1950a86a20f9469cfc6c`,
2. the protocol version `1001`,
3. `sys_info`: byte order and C type sizes of the saving machine,
4. the object itself (a state dict), whose tensors refer to storages by
   persistent id `('storage', StorageType, key, location, numel, view)` and are
   rebuilt by `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`,
5. the sorted list of storage keys,

then, for each key in that order, an 8-byte little-endian element count and the
storage's raw bytes. This module unpickles (4) with a persistent-load hook and an
allow-list of globals (so an arbitrary pickle cannot run code), reads the
storages, and returns each tensor as a numpy array with its own memory.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import os
import pickle
import struct

import numpy as np

_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
_PROTOCOL_VERSION = 1001

# torch storage class name -> numpy dtype (bytes as stored; bfloat16 is widened later).
_STORAGE_DTYPES = {
    "DoubleStorage": "f8",
    "FloatStorage": "f4",
    "HalfStorage": "f2",
    "BFloat16Storage": "u2",
    "LongStorage": "i8",
    "IntStorage": "i4",
    "ShortStorage": "i2",
    "CharStorage": "i1",
    "ByteStorage": "u1",
    "BoolStorage": "?",
    "UntypedStorage": "u1",
}


@dataclasses.dataclass(frozen=True)
class _StorageType:
    name: str

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(_STORAGE_DTYPES[self.name])


@dataclasses.dataclass(frozen=True)
class _StorageRef:
    """A storage (or, in very old files, a view of one) named in the pickle."""

    root_key: str
    storage_type: _StorageType
    numel: int
    view_offset: int = 0


@dataclasses.dataclass(frozen=True)
class _TensorRef:
    """A tensor whose bytes come after the pickle: filled in once they are read."""

    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, _StorageRef):
        raise pickle.UnpicklingError(f"A tensor is built on a {type(storage).__name__}.")
    return _TensorRef(storage, int(storage_offset), tuple(size), tuple(stride))


def _rebuild_parameter(data, *_ignored):
    return data


_ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
}


class _PlainUnpickler(pickle.Unpickler):
    """For the header and the key list: plain values only, no globals at all."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(
            f"{module}.{name} is not allowed in a checkpoint's header or storage list."
        )


class _StateDictUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[(module, name)]
        raise pickle.UnpicklingError(
            f"{module}.{name} is not allowed in a state dict: only tensors, storages and "
            "(ordered) dicts, lists and tuples of them can be read without torch."
        )

    def persistent_load(self, saved_id):
        kind = _ascii(saved_id[0])
        if kind != "storage":
            raise pickle.UnpicklingError(
                f"Persistent id of kind {kind!r}: only tensors can be read (a pickled "
                "nn.Module is not a state dict; save `model.state_dict()` instead)."
            )
        storage_type, root_key, _location, numel, view_metadata = saved_id[1:]
        root_key = _ascii(root_key)
        if view_metadata is None:
            return _StorageRef(root_key, storage_type, int(numel))
        _view_key, view_offset, view_numel = view_metadata
        return _StorageRef(root_key, storage_type, int(view_numel), int(view_offset))


def load_legacy_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Reads a legacy-format PyTorch state dict as numpy arrays.

    Args:
        path: a `.pth` / `.pt` file written by `torch.save` in the legacy
            (non-zip) format, holding a dict of tensors.

    Returns:
        A dict from parameter name to a C-contiguous numpy array (float32 for
        `torch.float32` tensors), in the file's order. `torch.bfloat16` tensors
        come back as float32.

    Raises:
        ValueError: the file is not in the legacy format (a zip-format
            checkpoint, from `torch.save` since PyTorch 1.6, is refused by
            name), or its records are inconsistent.
        pickle.UnpicklingError: a pickle in it names anything but tensors and
            (ordered) dicts; nothing it names is ever called.
    """
    with open(path, "rb") as handle:
        data = handle.read()
    if data[:4] == b"PK\x03\x04":
        raise ValueError(
            f"{path} is a zip-format PyTorch checkpoint, not the legacy format this reads."
        )
    stream = io.BytesIO(data)
    byte_order = _read_header(stream, path)
    unpickler = _StateDictUnpickler(stream, encoding="latin1")
    obj = unpickler.load()
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict.")
    storage_keys = [_ascii(key) for key in _PlainUnpickler(stream).load()]
    storages = _read_storages(data, stream.tell(), storage_keys, _storage_types(obj), byte_order)
    return {str(name): _materialize(value, storages, name) for name, value in obj.items()}


def _read_header(stream, path) -> str:
    try:
        magic = _PlainUnpickler(stream).load()
        protocol = _PlainUnpickler(stream).load()
        sys_info = _PlainUnpickler(stream).load()
    except Exception as error:  # any failure here means "not this format"
        raise ValueError(f"{path} is not a legacy-format PyTorch file.") from error
    if magic != _MAGIC_NUMBER or protocol != _PROTOCOL_VERSION:
        raise ValueError(
            f"{path} is not a legacy-format PyTorch file (magic {magic!r}, protocol {protocol!r})."
        )
    return "<" if sys_info.get("little_endian", True) else ">"


def _storage_types(state_dict) -> dict[str, _StorageRef]:
    """Root storage key -> a reference to it, from every tensor in the state dict."""
    refs = {}
    for value in state_dict.values():
        if isinstance(value, _TensorRef):
            ref = value.storage
            refs.setdefault(ref.root_key, ref)
    return refs


def _read_storages(data, position, keys, refs, byte_order) -> dict[str, np.ndarray]:
    storages = {}
    for key in keys:
        if key not in refs:
            raise ValueError(f"Storage {key!r} is listed but no tensor uses it.")
        dtype = refs[key].storage_type.dtype.newbyteorder(byte_order)
        if position + 8 > len(data):
            raise ValueError(f"The file ends before storage {key!r}.")
        (count,) = struct.unpack("<q", data[position : position + 8])
        position += 8
        end = position + count * dtype.itemsize
        if count < 0 or end > len(data):
            raise ValueError(f"Storage {key!r} claims {count} elements past the end of the file.")
        storages[key] = np.frombuffer(data, dtype=dtype, count=count, offset=position)
        position = end
    return storages


def _materialize(value, storages, name):
    if not isinstance(value, _TensorRef):
        raise ValueError(f"Entry {name!r} is a {type(value).__name__}, not a tensor.")
    ref = value.storage
    flat = storages[ref.root_key][ref.view_offset : ref.view_offset + ref.numel]
    size, stride, offset = value.size, value.stride, value.offset
    if any(dim < 0 for dim in size) or any(step < 0 for step in stride):
        raise ValueError(f"Tensor {name!r} has a negative size or stride.")
    if 0 in size:
        return np.zeros(size, dtype=_native(flat.dtype))
    last = offset + sum((dim - 1) * step for dim, step in zip(size, stride))
    if offset < 0 or last >= flat.size:
        raise ValueError(f"Tensor {name!r} reaches past the end of its storage.")
    view = np.lib.stride_tricks.as_strided(
        flat[offset:],
        shape=size,
        strides=tuple(step * flat.itemsize for step in stride),
        writeable=False,
    )
    array = np.array(view, dtype=_native(flat.dtype), order="C", copy=True)
    if ref.storage_type.name == "BFloat16Storage":
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _native(dtype: np.dtype) -> np.dtype:
    return dtype.newbyteorder("=")


def _ascii(value) -> str:
    return value.decode("ascii") if isinstance(value, bytes) else value
