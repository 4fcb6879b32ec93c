"""Model names and `models pull`: resolution, atomic verified downloads, and failures in one line."""

from __future__ import annotations

import hashlib
import http.server
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inference.errors import ModelLoadError, ModelPullError
from inference.model_store import KNOWN_MODELS, pull, resolve_model
from tests.support.redis_server import free_port

PAYLOAD = b"not really a model, but bytes with a known hash" * 1000
PAYLOAD_SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def mirror() -> Iterator[str]:
    """A local HTTP server: /model.onnx serves PAYLOAD, anything else is a 404."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path != "/model.onnx":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            self.wfile.write(PAYLOAD)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(10)


def test_resolve_paths_and_names(model_path: Path, tmp_path: Path) -> None:
    assert resolve_model(model_path, tmp_path) == model_path
    assert resolve_model(str(model_path), tmp_path) == model_path
    assert resolve_model("yolox_nano", model_path.parent) == model_path
    with pytest.raises(ModelLoadError, match="does not exist"):
        resolve_model(tmp_path / "nope.onnx", tmp_path)


def test_known_but_absent_name_says_how_to_pull(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="lookout models pull yolox_s"):
        resolve_model("yolox_s", tmp_path)


def test_unknown_name_lists_the_known_ones(tmp_path: Path) -> None:
    (tmp_path / "mine.onnx").write_bytes(b"x")
    with pytest.raises(ModelLoadError) as error:
        resolve_model("yolox_q", tmp_path)
    message = str(error.value)
    assert "unknown model 'yolox_q'" in message
    for name in (*KNOWN_MODELS, "mine"):
        assert name in message


def test_pull_verifies_and_renames_atomically(mirror: str, tmp_path: Path) -> None:
    seen: list[int] = []

    def progress(done: int, total: int | None) -> Callable[[int], None]:
        assert total == len(PAYLOAD)
        return seen.append

    path = pull(
        "yolox_s", tmp_path / "models", sha256=PAYLOAD_SHA, url=f"{mirror}/model.onnx", progress=progress
    )
    assert path == tmp_path / "models" / "yolox_s.onnx"
    assert path.read_bytes() == PAYLOAD and sum(seen) == len(PAYLOAD)
    assert sorted(p.name for p in path.parent.iterdir()) == ["yolox_s.onnx"]  # no temp file left


def test_pull_with_the_wrong_hash_leaves_nothing(mirror: str, tmp_path: Path) -> None:
    with pytest.raises(ModelPullError, match="does not match"):
        pull("yolox_s", tmp_path, sha256="0" * 64, url=f"{mirror}/model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_pull_http_error(mirror: str, tmp_path: Path) -> None:
    with pytest.raises(ModelPullError, match="HTTP 404"):
        pull("yolox_s", tmp_path, sha256=PAYLOAD_SHA, url=f"{mirror}/missing.onnx")
    assert list(tmp_path.iterdir()) == []


def test_pull_without_network_fails_in_one_line(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}/yolox_s.onnx"  # nothing listens there
    with pytest.raises(ModelPullError, match="cannot download") as error:
        pull("yolox_s", tmp_path, sha256=PAYLOAD_SHA, url=closed, timeout_s=10)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_pull_needs_a_pin_and_explains_yolov7(tmp_path: Path) -> None:
    with pytest.raises(ModelPullError, match="no verified sha256 pin for yolox_nano: pass --sha256"):
        pull("yolox_nano", tmp_path)
    with pytest.raises(ModelPullError, match="64 hex digits"):
        pull("yolox_nano", tmp_path, sha256="c789161e")
    with pytest.raises(ModelPullError, match=r"only PyTorch \.pt weights.*export\.py"):
        pull("yolov7-tiny", tmp_path)
    with pytest.raises(ModelPullError, match="unknown model"):
        pull("yolox_q", tmp_path)
