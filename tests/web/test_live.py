"""The acceptance path: `lookout up` (embedded Redis, signaling, a bridge, workers) and real headless
Chromium whose fake webcam plays a street clip. The page must show people, draw boxes, show its
latency, use the forced codec, and keep two sessions apart."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.support.browser import open_live_page, wait_for_ink, wait_for_results
from tests.support.processes import LookoutProcess
from tests.support.redis_server import free_port

pytestmark = pytest.mark.slow


UP_READY_TIMEOUT_S = 120.0  # embedded Redis, imports and two model loads on a busy 2-core machine


@pytest.fixture(scope="module")
def live_url(shared_dir: Path) -> Iterator[str]:
    """One `lookout up` for the module: embedded Redis, signaling, one bridge and two workers."""
    port = free_port()
    env = {
        "LOOKOUT_MODEL_DIR": str(shared_dir / "models"),
        # Headless Chromium and aiortc on loopback: the bridge gathers 127.0.0.1 only (docs/live.md).
        "LOOKOUT_ICE_HOST_ADDRESSES": "127.0.0.1",
    }
    up = LookoutProcess(
        "web-up", ["up", "--host", "127.0.0.1", "--port", str(port), "--workers", "2", "--bridges", "1"], env
    )
    try:
        deadline = time.monotonic() + UP_READY_TIMEOUT_S
        while "lookout up: ready at" not in up.log():
            assert up.alive(), f"`lookout up` exited early:\n{up.log()[-3000:]}"
            assert time.monotonic() < deadline, f"`lookout up` not ready:\n{up.log()[-3000:]}"
            time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/"
    finally:
        # `lookout up` gives each part 10 s to stop before it kills it: wait longer than that.
        code = up.stop(timeout=30)
        assert code == 0, f"`lookout up` exited {code}:\n{up.log_path.read_text(errors='replace')[-3000:]}"


def wait_for_workers(page: Page) -> None:
    """The model list comes from the server; workers may still be loading when the page opens."""
    expect(page.get_by_test_id("model-select")).to_contain_text(
        re.compile(r"\([1-9]\d* workers?\)"), timeout=30_000
    )


# Each codec also runs one of the two displays: the synced picture (default) and the live video.
@pytest.mark.parametrize(
    ("codec", "mime", "synced"), [("vp8", "video/VP8", True), ("h264", "video/H264", False)]
)
def test_live_detections_are_drawn_over_the_video(
    browser: Browser, live_url: str, output_dir: Path, codec: str, mime: str, synced: bool
) -> None:
    query = f"codec={codec}" + ("" if synced else "&sync=0")
    page = open_live_page(browser, live_url, query=query, start=False)
    try:
        wait_for_workers(page)
        page.get_by_test_id("start").click()
        results = wait_for_results(page, 5, label="person")
        assert all(r["width"] > 0 and r["height"] > 0 for r in results)
        expect(page.get_by_test_id("detections")).to_contain_text("person")
        wait_for_ink(page, "#overlay", minimum=500)  # boxes and labels, not a stray pixel
        # Synced: the delayed picture is painted (opaque) over the video; live: it is hidden.
        assert page.get_by_test_id("picture").is_visible() is synced
        if synced:
            wait_for_ink(page, "#picture")
        expect(page.get_by_test_id("stat-latency")).to_have_text(re.compile(r"^\d+ ms$"))
        expect(page.get_by_test_id("stat-people")).to_have_text(re.compile(r"^\d+$"))
        expect(page.get_by_test_id("stat-model")).to_have_text("yolox_nano")
        assert page.evaluate("window.lookout.codec()") == mime  # what getStats says was negotiated
        expect(page.get_by_test_id("stat-codec")).to_have_text(mime)
        page.screenshot(path=str(output_dir / f"web-live-{codec}.png"))
    finally:
        page.context.close()


def test_two_sessions_at_once_each_get_only_their_own_results(browser: Browser, live_url: str) -> None:
    pages = [open_live_page(browser, live_url, start=False) for _ in range(2)]
    try:
        for page in pages:
            wait_for_workers(page)
            page.get_by_test_id("start").click()
        for page in pages:
            wait_for_results(page, 5)
        sessions = [page.evaluate("window.lookout.session") for page in pages]
        assert sessions[0] != sessions[1]
        for page, session in zip(pages, sessions, strict=True):
            seen = page.evaluate("window.lookout.results.map((r) => r.session)")
            assert set(seen) == {session}
            assert page.evaluate("window.lookout.foreignResults") == 0
            seqs = page.evaluate("window.lookout.results.map((r) => r.seq)")
            assert seqs == sorted(set(seqs))  # one result per frame, in order
    finally:
        for page in pages:
            page.context.close()
