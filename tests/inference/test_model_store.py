"""Model names and `models pull`: resolution, atomic verified downloads, and failures in one line."""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from inference.errors import ModelLoadError, ModelPullError
from inference.model_store import KNOWN_MODELS, YOLOX_PINS, pull, resolve_model
from lookout.cli import main
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
    with pytest.raises(
        ModelPullError, match=r"no sha256 pin for yolox_m \(pinned: yolox_nano, .*\): pass --sha256"
    ):
        pull("yolox_m", tmp_path)
    with pytest.raises(ModelPullError, match="64 hex digits"):
        pull("yolox_nano", tmp_path, sha256="c789161e")
    with pytest.raises(ModelPullError, match=r"only PyTorch \.pt weights.*export\.py"):
        pull("yolov7-tiny", tmp_path)
    with pytest.raises(ModelPullError, match="unknown model"):
        pull("yolox_q", tmp_path)


# --- `lookout models pull NAME` with the pinned release hashes --------------------------------------------
def test_the_pins_are_the_release_hashes_in_sources_md(shared_dir: Path) -> None:
    """The table in ../shared/SOURCES.md ("Official YOLOX release files") is where the pins come from."""
    text = (shared_dir / "SOURCES.md").read_text()
    table = text[text.index("## Official YOLOX release files") :]
    listed = dict(re.findall(r"^\| `(yolox_\w+)\.onnx` \| [\d,]+ \| `([0-9a-f]{64})` \|", table, re.M))
    assert listed == YOLOX_PINS and set(listed) == {"yolox_nano", "yolox_tiny", "yolox_s"}
    for name in ("yolox_nano", "yolox_tiny", "yolox_s"):
        spec = KNOWN_MODELS[name]
        assert spec.sha256 == listed[name]
        assert (
            spec.url
            == f"https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0/{name}.onnx"
        )


def pull_command(*args: str | Path) -> list[str]:
    return ["models", "pull", *map(str, args)]


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if line.startswith("lookout: error:")]


def test_a_pinned_name_downloads_and_verifies_without_sha256(
    mirror: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The release, served here: the mirror's bytes and their hash stand in for the real file and its pin.
    pinned = dataclasses.replace(KNOWN_MODELS["yolox_nano"], url=f"{mirror}/model.onnx", sha256=PAYLOAD_SHA)
    monkeypatch.setitem(KNOWN_MODELS, "yolox_nano", pinned)
    assert main(pull_command("yolox_nano", "--dir", tmp_path)) == 0
    saved = tmp_path / "yolox_nano.onnx"
    assert capsys.readouterr().out.strip() == str(saved)
    assert saved.read_bytes() == PAYLOAD and [p.name for p in tmp_path.iterdir()] == ["yolox_nano.onnx"]


def test_a_file_that_does_not_match_the_pin_is_refused_and_nothing_is_left(
    mirror: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The real pin, and a mirror serving other bytes: a tampered or truncated download.
    monkeypatch.setitem(
        KNOWN_MODELS, "yolox_s", dataclasses.replace(KNOWN_MODELS["yolox_s"], url=f"{mirror}/model.onnx")
    )
    assert main(pull_command("yolox_s", "--dir", tmp_path)) != 0
    (line,) = error_lines(capsys.readouterr().err)
    assert f"sha256 {PAYLOAD_SHA} does not match the pinned {YOLOX_PINS['yolox_s']}; discarded" in line
    assert list(tmp_path.iterdir()) == []  # no partial file, no temporary file
    # The same with an explicit --sha256 that is wrong, for a mirror of the user's choosing.
    assert main(
        pull_command("yolox_s", "--dir", tmp_path, "--url", f"{mirror}/model.onnx", "--sha256", "0" * 64)
    )
    (line,) = error_lines(capsys.readouterr().err)
    assert "does not match the expected 000" in line and list(tmp_path.iterdir()) == []


def test_an_unknown_name_without_sha256_lists_the_known_names(
    mirror: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(pull_command("yolox_q", "--dir", tmp_path)) != 0
    (line,) = error_lines(capsys.readouterr().err)
    assert "unknown model 'yolox_q'; known names: " in line
    assert all(name in line for name in KNOWN_MODELS)
    # Another file at a URL given directly needs --sha256, and with it, downloads.
    assert main(pull_command("mine", "--dir", tmp_path, "--url", f"{mirror}/model.onnx")) != 0
    (line,) = error_lines(capsys.readouterr().err)
    assert "no sha256 pin for mine" in line and "pass --sha256" in line
    assert (
        main(
            pull_command("mine", "--dir", tmp_path, "--url", f"{mirror}/model.onnx", "--sha256", PAYLOAD_SHA)
        )
        == 0
    )
    assert (tmp_path / "mine.onnx").read_bytes() == PAYLOAD
