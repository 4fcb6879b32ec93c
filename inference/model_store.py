"""Model names: where each one comes from, how a name resolves to a file, and ``lookout models pull``.

A name (yolox_nano, ..., yolov7) is looked up as ``<model_dir>/<name>.onnx``; anything that looks like a
path is used as one. Downloads are atomic: a temporary file beside the target, checked against a sha256,
then renamed, so a half-downloaded model is never picked up by a worker. yolox_nano, yolox_tiny and
yolox_s carry a pinned sha256, so ``lookout models pull yolox_s`` needs nothing else; any other file
(the larger YOLOX models, or another file at a URL given directly) needs ``--sha256``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from inference.errors import ModelLoadError, ModelPullError

log = logging.getLogger(__name__)

YOLOX_RELEASE = "https://github.com/Megvii-BaseDetection/YOLOX/releases/download/0.1.1rc0"
YOLOV7_EXPORT = (
    "YOLOv7 releases (github.com/WongKinYiu/yolov7/releases) ship only PyTorch .pt weights; export ONNX "
    "yourself: git clone https://github.com/WongKinYiu/yolov7 && cd yolov7 "
    "&& pip install -r requirements.txt "
    "&& wget https://github.com/WongKinYiu/yolov7/releases/download/v0.1/{name}.pt && python export.py "
    "--weights {name}.pt --grid --end2end --simplify --topk-all 100 --iou-thres 0.65 --conf-thres 0.35 "
    "--img-size 640 640 --max-wh 640 (or drop --end2end --topk-all --max-wh for the decoded [1,N,85] "
    "output), then copy {name}.onnx into {dir}"
)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    url: str | None
    """Official download; None when the project publishes no ONNX file (YOLOv7)."""
    sha256: str | None
    """The pinned sha256 of the file at ``url`` (or a mirror of it); None means --sha256 is required."""
    family: str


# sha256 of Megvii's 0.1.1rc0 release assets, as pinned independently by several public projects that
# download them (each cross-checked in at least three; ../shared/SOURCES.md). They could not be hashed
# here (no network). The yolox_nano release file is not ../shared's yolox_nano.onnx, a re-export of the
# same weights. yolox_m, yolox_l and yolox_x have no pin: pass --sha256.
YOLOX_PINS = {
    "yolox_nano": "c789161ed43c8269fcd4e67c67eeeb4e80c622da2eb296a20bc6007bd18a0b7d",  # 3,659,407 bytes
    "yolox_tiny": "427cc366d34e27ff7a03e2899b5e3671425c262ea2291f88bb942bc1cc70b0f7",  # 20,219,662 bytes
    "yolox_s": "c5c2d13e59ae883e6af3b45daea64af4833a4951c92d116ec270d9ddbe998063",  # 35,858,002 bytes
}
KNOWN_MODELS: dict[str, ModelSpec] = {
    **{
        name: ModelSpec(name, f"{YOLOX_RELEASE}/{name}.onnx", YOLOX_PINS.get(name), "yolox")
        for name in ("yolox_nano", "yolox_tiny", "yolox_s", "yolox_m", "yolox_l", "yolox_x")
    },
    "yolov7-tiny": ModelSpec("yolov7-tiny", None, None, "yolov7"),
    "yolov7": ModelSpec("yolov7", None, None, "yolov7"),
}


def looks_like_path(model: str | Path) -> bool:
    text = str(model)
    return isinstance(model, Path) or "/" in text or os.sep in text or text.endswith(".onnx")


def available_names(model_dir: Path) -> list[str]:
    """Names of the .onnx files in ``model_dir`` (the known names first)."""
    found = sorted(p.stem for p in model_dir.glob("*.onnx")) if model_dir.is_dir() else []
    return found


def resolve_model(model: str | Path, model_dir: Path) -> Path:
    """The .onnx file for a path or a name; raises ModelLoadError saying what exists."""
    if looks_like_path(model):
        path = Path(model).expanduser()
        if not path.is_file():
            raise ModelLoadError(f"model file {path} does not exist")
        return path
    name = str(model)
    path = model_dir / f"{name}.onnx"
    if path.is_file():
        return path
    if name in KNOWN_MODELS:
        raise ModelLoadError(
            f"model {name} is not in {model_dir} (LOOKOUT_MODEL_DIR); get it with "
            f"`lookout models pull {name} --dir {model_dir}`"
        )
    here = available_names(model_dir)
    known = ", ".join(sorted(set(KNOWN_MODELS) | set(here)))
    raise ModelLoadError(f"unknown model {name!r}; known names: {known} (or pass a path to an .onnx file)")


def pull(
    name: str,
    model_dir: Path,
    *,
    sha256: str | None = None,
    url: str | None = None,
    timeout_s: float = 30.0,
    progress: Callable[[int, int | None], Callable[[int], None]] | None = None,
) -> Path:
    """Download a known model into ``model_dir`` atomically and verify its sha256; returns the file.

    The sha256 is ``sha256`` when given, else the name's pin (which a mirror's ``url`` must match too).
    An unknown name needs both ``url`` and ``sha256``. ``progress(done, total)`` makes a callback
    receiving each chunk size (the CLI passes a tqdm bar).
    """
    import urllib.error
    import urllib.request

    spec = KNOWN_MODELS.get(name)
    if spec is None and url is None:
        raise ModelPullError(
            f"unknown model {name!r}; known names: {', '.join(KNOWN_MODELS)} "
            "(or give --url and --sha256 for another file)"
        )
    if spec is not None and spec.family == "yolov7" and url is None:
        raise ModelPullError(YOLOV7_EXPORT.format(name=name, dir=model_dir))
    source = url or (spec.url if spec else None)
    assert source is not None
    expected = (sha256 or (spec.sha256 if spec else None) or "").lower()
    which = "expected" if sha256 else "pinned"
    if not expected:
        pinned = ", ".join(YOLOX_PINS)
        raise ModelPullError(
            f"no sha256 pin for {name} (pinned: {pinned}): pass --sha256 HEX, the hash you trust for {source}"
        )
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise ModelPullError(f"--sha256 must be 64 hex digits, got {expected!r}")
    target = model_dir / f"{name}.onnx"
    model_dir.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s from %s", name, source)
    digest = hashlib.sha256()
    handle, temp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".part", dir=model_dir)
    temp = Path(temp_name)
    try:
        with os.fdopen(handle, "wb") as out:
            try:
                with urllib.request.urlopen(source, timeout=timeout_s) as response:
                    length = response.headers.get("Content-Length")
                    advance = progress(0, int(length) if length else None) if progress else None
                    while block := response.read(1 << 16):
                        out.write(block)
                        digest.update(block)
                        if advance:
                            advance(len(block))
            except urllib.error.HTTPError as exc:
                raise ModelPullError(f"cannot download {source}: HTTP {exc.code} {exc.reason}") from None
            except (urllib.error.URLError, OSError) as exc:
                reason = getattr(exc, "reason", exc)
                raise ModelPullError(f"cannot download {source}: {reason} (no network access?)") from None
        actual = digest.hexdigest()
        if actual != expected:
            raise ModelPullError(
                f"{source}: sha256 {actual} does not match the {which} {expected}; discarded"
            )
        os.replace(temp, target)
    finally:
        temp.unlink(missing_ok=True)
    log.info("saved %s (sha256 %s)", target, expected)
    return target
