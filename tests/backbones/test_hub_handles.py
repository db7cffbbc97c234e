"""Resolving SavedModel handles: local folders, and URLs through TF-Hub's
compressed format, served here by an HTTP server on 127.0.0.1."""

import http.server
import importlib.util
import io
import sys
import tarfile
import threading
import types

import keras
import numpy as np
import pytest
from testing_utils import shadow_with_a_broken_package

import keras_transfer as kt
from keras_transfer.backbones.hub_handles import is_url, resolve_handle

ON_TENSORFLOW = keras.config.backend() == "tensorflow"
HAS_TENSORFLOW_HUB = importlib.util.find_spec("tensorflow_hub") is not None
URL = "https://tfhub.dev/google/some-model/1"


@pytest.mark.parametrize(
    "handle, expected",
    [
        ("https://tfhub.dev/google/some-model/1", True),
        ("https://www.kaggle.com/models/google/bert/tensorFlow2/en-uncased/3", True),
        ("http://127.0.0.1:8000/models/encoder/1", True),
        ("/models/encoder", False),
        ("models/https:/x", False),
        ("gs://bucket/model", False),
    ],
)
def test_is_url(handle, expected):
    assert is_url(handle) is expected


def test_a_folder_is_its_own_handle(tmp_path):
    assert resolve_handle(str(tmp_path)) == str(tmp_path)


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="No SavedModel folder at .*missing"):
        resolve_handle(str(tmp_path / "missing"))


def test_url_without_tensorflow_hub_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_hub", None)
    with pytest.raises(ImportError, match=r"keras-transfer\[hub\].*local folder"):
        resolve_handle(URL)


def test_tensorflow_hub_that_fails_to_import_names_what_it_needs(monkeypatch, tmp_path):
    # What tensorflow-hub 0.16.1 does under setuptools >= 81: its own import fails.
    shadow_with_a_broken_package(
        monkeypatch, tmp_path, "tensorflow_hub", "from pkg_resources_removed import parse_version\n"
    )
    with pytest.raises(ImportError, match=r"pkg_resources_removed.*tf-keras.*setuptools<81") as e:
        resolve_handle(URL)
    assert "keras-transfer[hub]" in str(e.value)


def test_url_that_cannot_be_fetched_says_to_download_it(monkeypatch):
    def resolve(handle):
        raise OSError("Name or service not known")

    monkeypatch.setitem(sys.modules, "tensorflow_hub", types.SimpleNamespace(resolve=resolve))
    with pytest.raises(OSError, match="Could not fetch .*not known.*pass the local folder"):
        resolve_handle("https://www.kaggle.com/models/google/some-model/tensorFlow2/default/1")


def test_url_is_resolved_by_tensorflow_hub(monkeypatch, tmp_path):
    seen = []
    resolver = types.SimpleNamespace(resolve=lambda handle: seen.append(handle) or str(tmp_path))
    monkeypatch.setitem(sys.modules, "tensorflow_hub", resolver)
    assert resolve_handle(URL) == str(tmp_path)
    assert seen == [URL]


class _HubServer:
    """Serves SavedModel archives as TF-Hub's hosting protocol does: the model's
    URL with `?tf-hub-format=compressed` answers with a tar.gz of its folder."""

    def __init__(self, archives):
        self.archives = archives  # URL path -> tar.gz bytes
        self.requests = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                path, _, query = self.path.partition("?")
                body = server.archives.get(path)
                if body is None or query != "tf-hub-format=compressed":
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-tar")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *args):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


def compressed(folder) -> bytes:
    """A SavedModel folder in TF-Hub's compressed format (its root at `.`)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        archive.add(folder, arcname=".")
    return buffer.getvalue()


@pytest.fixture
def hub_server(tmp_path, monkeypatch):
    from backbones.saved_models import save_encoder

    monkeypatch.setenv("TFHUB_CACHE_DIR", str(tmp_path / "tfhub_cache"))
    archive = compressed(save_encoder(tmp_path / "encoder"))
    with _HubServer({"/models/encoder/1": archive}) as server:
        yield server


needs_tensorflow_hub = pytest.mark.skipif(
    not HAS_TENSORFLOW_HUB,
    reason="needs tensorflow-hub: pip install 'keras-transfer[hub]' (the `all` extra has it)",
)


@needs_tensorflow_hub
def test_url_downloads_into_the_tfhub_cache_once(hub_server, tmp_path):
    url = f"{hub_server.url}/models/encoder/1"
    folder = resolve_handle(url)
    assert hub_server.requests == ["/models/encoder/1?tf-hub-format=compressed"]
    assert folder.startswith(str(tmp_path / "tfhub_cache"))
    assert (tmp_path / "tfhub_cache").exists()
    assert resolve_handle(url) == folder  # From the cache: no second download.
    assert len(hub_server.requests) == 1
    with pytest.raises(OSError, match="Could not fetch .*/models/missing/1.*404"):
        resolve_handle(f"{hub_server.url}/models/missing/1")


@needs_tensorflow_hub
@pytest.mark.skipif(not ON_TENSORFLOW, reason="kt.HubLayer needs the TensorFlow backend")
def test_hub_layer_from_a_url_fine_tunes_and_round_trips(hub_server, tmp_path):
    from backbones.hub_testing import assert_all_changed, assert_same, data, fit, hub_values
    from backbones.saved_models import INPUT_DIM

    url = f"{hub_server.url}/models/encoder/1"
    model = keras.Sequential(
        [
            keras.Input((INPUT_DIM,)),
            kt.HubLayer(url, trainable=True, name="encoder"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    assert hub_server.requests == ["/models/encoder/1?tf-hub-format=compressed"]
    hub = model.get_layer("encoder")
    assert hub.get_config()["handle"] == url
    assert [group.name for group in kt.layer_groups(model)] == [
        "encoder/layer_0",
        "encoder/layer_1",
        "encoder/layer_2",
        "head",
    ]
    before = hub_values(model)
    history = fit(model, epochs=4)
    assert history.history["loss"][-1] < 0.8 * history.history["loss"][0]
    fine_tuned = hub_values(model)
    assert_all_changed(before, fine_tuned)
    x, _ = data(8)
    expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="SavedModel is a program"):
        keras.models.load_model(tmp_path / "model.keras")
    reloaded = keras.models.load_model(tmp_path / "model.keras", safe_mode=False)
    assert reloaded.get_layer("encoder").get_config()["handle"] == url
    assert_same(fine_tuned, hub_values(reloaded))
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), expected, atol=1e-6)
    assert len(hub_server.requests) == 1  # The reload read the TF-Hub cache.


@needs_tensorflow_hub
@pytest.mark.skipif(not ON_TENSORFLOW, reason="kt.HubLayer needs the TensorFlow backend")
def test_load_backbone_takes_a_url(hub_server):
    from backbones.saved_models import INPUT_DIM, UNITS

    backbone = kt.load_backbone(f"{hub_server.url}/models/encoder/1", input_shape=(INPUT_DIM,))
    assert isinstance(backbone.layers[-1], kt.HubLayer)
    assert backbone.output.shape == (None, UNITS)
    assert backbone.trainable_weights
