"""Real headless Chromium for tests: Debian's /usr/bin/chromium driven by Playwright, with a fake webcam
that plays a real clip, and helpers to read what the page shows.

Playwright's own browser download is not used (and cannot happen here): ``executable_path`` points at
the system Chromium. Each ``launch`` gets a fresh temporary profile from Playwright.
"""

from __future__ import annotations

import mimetypes
from pathlib import Path
from typing import Any

from playwright.sync_api import Browser, Page, Playwright, Route

CHROMIUM = Path("/usr/bin/chromium")
WEB_DIR = Path(__file__).resolve().parents[2] / "web"

# Flags from ../shared/NOTES.md (the verified facts of this machine, beside the checkout): a fake camera
# at 30 fps, loopback ICE candidates allowed, and nothing that talks to the internet or to Google services
# (there is no network, and it would only cost CPU).
BASE_ARGS = [
    "--use-fake-device-for-media-stream=fps=30",
    "--allow-loopback-in-peer-connection",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    # Headless pages count as visible, but make sure timers and frame callbacks are never throttled.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]


def write_y4m(source: Path, target: Path, frames: int = 100) -> Path:
    """Write the first ``frames`` frames of ``source`` as a y4m clip (raw yuv420p) for the fake camera.

    Chromium loops the clip. Raw video is large (480x360: 260 KB a frame), so keep it short and write it
    under the test's tmp dir, never into git.
    """
    import av

    with av.open(str(source)) as src, av.open(str(target), "w", format="yuv4mpegpipe") as dst:
        video_in = src.streams.video[0]
        rate = video_in.average_rate or 10
        out = dst.add_stream("rawvideo", rate=rate)
        out.width = video_in.codec_context.width
        out.height = video_in.codec_context.height
        out.pix_fmt = "yuv420p"
        written = 0
        for frame in src.decode(video_in):
            for packet in out.encode(frame.reformat(format="yuv420p")):
                dst.mux(packet)
            written += 1
            if written >= frames:
                break
        for packet in out.encode():
            dst.mux(packet)
    return target


def chromium_args(fake_video: Path | None = None, *, grant_camera: bool = True) -> list[str]:
    """Chromium flags; ``grant_camera=False`` leaves the permission prompt on, which headless denies."""
    args = list(BASE_ARGS)
    if grant_camera:
        args.append("--use-fake-ui-for-media-stream")
    if fake_video is not None:
        args.append(f"--use-file-for-fake-video-capture={fake_video}")
    return args


def launch_chromium(
    playwright: Playwright, fake_video: Path | None = None, *, grant_camera: bool = True
) -> Browser:
    """Start headless Chromium (close it with ``browser.close()``).

    One Playwright driver per thread: launch every browser of a test run from the same ``playwright``.
    """
    if not CHROMIUM.exists():
        raise RuntimeError(f"{CHROMIUM} is missing: run `make system-deps` (apt-get install chromium)")
    return playwright.chromium.launch(
        executable_path=str(CHROMIUM),
        headless=True,
        args=chromium_args(fake_video, grant_camera=grant_camera),
    )


def serve_web_dir(page: Page, origin: str = "http://localhost", web_dir: Path = WEB_DIR) -> str:
    """Answer every request to ``origin`` from ``web_dir`` inside Playwright (no server process).

    For unit tests of the page's ES modules: ``page.goto(origin + "/blank.html")`` then ``import()``.
    ``/blank.html`` is an empty page; any other path is a file of ``web_dir`` or a 404. The default origin
    is localhost because the camera needs a secure context; nothing listens there, Playwright answers.
    """

    def handle(route: Route) -> None:
        path = route.request.url.removeprefix(origin).split("?", 1)[0].lstrip("/")
        if path == "blank.html":
            route.fulfill(status=200, content_type="text/html", body="<!doctype html><title>blank</title>")
            return
        file = (web_dir / path).resolve()
        if not file.is_file() or web_dir.resolve() not in file.parents:
            route.fulfill(status=404, body="not found")
            return
        kind = "text/javascript" if file.suffix == ".js" else mimetypes.guess_type(file.name)[0]
        route.fulfill(status=200, content_type=kind or "application/octet-stream", body=file.read_bytes())

    page.route(f"{origin}/**", handle)
    return origin


INK_SCRIPT = """(selector) => {
  const canvas = document.querySelector(selector);
  if (!canvas || !canvas.width || !canvas.height) return 0;
  const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  let ink = 0;
  for (let i = 3; i < data.length; i += 4) if (data[i] !== 0) ink += 1;
  return ink;
}"""


def canvas_ink(page: Page, selector: str = "#overlay") -> int:
    """How many pixels of the canvas are not fully transparent (0: nothing is drawn)."""
    return int(page.evaluate(INK_SCRIPT, selector))


# --- the Lookout page (web/) -------------------------------------------------------------------------

LIVE_TIMEOUT_S = 30.0
"""How long a test waits for live results: generous, the machine has 2 busy cores."""


def open_live_page(browser: Browser, url: str, *, query: str = "", start: bool = True) -> Page:
    """A new context and page on the Lookout page at ``url`` (``query``: e.g. "codec=h264"); Start pressed.

    Close it with ``page.context.close()``.
    """
    context = browser.new_context(viewport={"width": 1280, "height": 940})
    page = context.new_page()
    page.goto(f"{url}?{query}" if query else url)
    if start:
        page.get_by_test_id("start").click()
    return page


def wait_for_results(
    page: Page,
    count: int,
    *,
    label: str | None = None,
    after_seq: int = -1,
    timeout_s: float = LIVE_TIMEOUT_S,
) -> list[dict[str, Any]]:
    """Until the page has drawn ``count`` results of its current session with seq > ``after_seq`` (and
    one of them contains ``label``); returns those results."""
    page.wait_for_function(
        """([count, label, afterSeq]) => {
          const mine = window.lookout.results.filter(
            (r) => r.session === window.lookout.session && r.seq > afterSeq);
          return mine.length >= count && (!label || mine.some((r) => r.labels.includes(label)));
        }""",
        arg=[count, label, after_seq],
        timeout=timeout_s * 1000,
        polling=200,
    )
    got: list[dict[str, Any]] = page.evaluate(
        "(afterSeq) => window.lookout.results.filter((r) => r.session === window.lookout.session"
        " && r.seq > afterSeq)",
        after_seq,
    )
    return got


def wait_for_ink(page: Page, selector: str = "#overlay", minimum: int = 1, timeout_s: float = 10.0) -> None:
    """Until the canvas has at least ``minimum`` painted pixels (boxes come and go with the frames)."""
    page.wait_for_function(
        f"([selector, minimum]) => ({INK_SCRIPT})(selector) >= minimum",
        arg=[selector, minimum],
        timeout=timeout_s * 1000,
        polling=100,
    )
