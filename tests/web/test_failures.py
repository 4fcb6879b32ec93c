"""The page against the real parts when parts fail: a bridge killed, a worker killed, signaling
restarted, no worker at all, and the camera denied.

The parts run as separate processes (the live-stack helper of the `lookout up` tests) so that one of
them can be killed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, expect
from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

from tests.support.browser import INK_SCRIPT, launch_chromium, open_live_page, wait_for_results
from tests.support.live_stack import LiveStack
from tests.support.processes import LookoutProcess

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack(shared_dir: Path) -> Iterator[LiveStack]:
    stack = LiveStack("web-failures", shared_dir / "models", bridges=2, workers=2)
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def idle_stack(shared_dir: Path) -> Iterator[LiveStack]:
    """Signaling and a bridge, but no worker."""
    stack = LiveStack("web-idle", shared_dir / "models", bridges=1, workers=0)
    try:
        yield stack.start()
    finally:
        stack.stop()


def page_state(page: Page) -> str:
    """What the page knows, for a failure message."""
    return str(
        page.evaluate(
            """() => ({
              status: document.getElementById("status").textContent,
              session: window.lookout.session,
              bridges: window.lookout.bridges,
              errors: window.lookout.errors.map((e) => e.code),
              connected: window.lookout.connected,
              results: window.lookout.results.length,
            })"""
        )
    )


def restart(stack: LiveStack, kind: str, name: str) -> None:
    """Start a fresh ``bridge`` or ``worker`` process under a killed one's id, and wait for its heartbeat."""
    parts = stack.bridges if kind == "bridge" else stack.workers
    parts[name] = LookoutProcess(name, [kind, "--id", name], stack.env)
    stack.wait_ready()


def test_killed_bridge_is_reported_and_the_page_rejoins_on_a_live_one(
    browser: Browser, stack: LiveStack
) -> None:
    page = open_live_page(browser, stack.url)
    try:
        first = wait_for_results(page, 3)
        bridge = page.evaluate("window.lookout.bridge")
        session = page.evaluate("window.lookout.session")
        stack.bridges[bridge].kill9()

        # The page says what happened, then joins again on the bridge that is still alive.
        try:
            page.wait_for_function(
                "(codes) => window.lookout.errors.some((e) => codes.includes(e.code))",
                arg=["bridge_lost", "media_failed"],
                timeout=30_000,
                polling=200,
            )
            # A rejoin may first land on the dead bridge while its heartbeat has not expired yet; that
            # attempt times out and the next one goes elsewhere, hence the generous timeout.
            page.wait_for_function(
                "(dead) => window.lookout.connected && window.lookout.bridge !== dead",
                arg=bridge,
                timeout=45_000,
            )
        except PlaywrightTimeoutError as exc:
            raise AssertionError(
                f"no rejoin after killing {bridge}: {page_state(page)}\n{stack.logs()}"
            ) from exc
        new_bridge = page.evaluate("window.lookout.bridge")
        assert page.evaluate("window.lookout.session") != session
        assert stack.bridges[new_bridge].alive()
        again = wait_for_results(page, 3)
        sessions = {r["session"] for r in again}
        assert sessions == {page.evaluate("window.lookout.session")}
        assert first[0]["session"] not in sessions
        expect(page.get_by_test_id("error")).to_be_hidden()
    finally:
        page.context.close()
        restart(stack, "bridge", bridge)  # the next test has two bridges again


def test_killed_worker_does_not_end_the_session(browser: Browser, stack: LiveStack) -> None:
    page = open_live_page(browser, stack.url)
    try:
        before = wait_for_results(page, 3)
        session = page.evaluate("window.lookout.session")
        victim = str(before[-1]["worker"])
        stack.workers[victim].kill9()
        last_seq = max(r["seq"] for r in before)
        after = wait_for_results(page, 10, after_seq=last_seq)
        survivors = {r["worker"] for r in after[-5:]}
        assert victim not in survivors
        assert page.evaluate("window.lookout.session") == session
        assert page.evaluate("window.lookout.bridges.length") == 1  # never rejoined
    finally:
        page.context.close()
        restart(stack, "worker", victim)


def test_restarted_signaling_is_reported_and_the_page_reconnects(browser: Browser, stack: LiveStack) -> None:
    page = open_live_page(browser, stack.url)
    try:
        wait_for_results(page, 3)
        session = page.evaluate("window.lookout.session")
        assert stack.signaling is not None
        stack.signaling.kill9()
        expect(page.get_by_test_id("status")).to_contain_text("Connection to the server lost", timeout=15_000)
        expect(page.get_by_test_id("stat-people")).to_have_text("\u2013")  # the panel is cleared
        stack.signaling = LookoutProcess(
            "web-failures-signaling-2",
            ["signaling", "--host", "127.0.0.1", "--port", str(stack.port)],
            env=stack.env,
        )
        page.wait_for_function(
            "(old) => window.lookout.session && window.lookout.session !== old", arg=session, timeout=30_000
        )
        wait_for_results(page, 3)
    finally:
        page.context.close()


def test_no_worker_alive_says_no_worker(browser: Browser, idle_stack: LiveStack, output_dir: Path) -> None:
    page = open_live_page(browser, idle_stack.url)
    try:
        expect(page.get_by_test_id("error")).to_contain_text("No worker is running", timeout=15_000)
        expect(page.get_by_test_id("model-select")).to_contain_text("0 workers")
        # The camera picture shows all the same (synced display: drawn by the page, no results needed).
        page.wait_for_function(f"() => ({INK_SCRIPT})('#picture') > 0", timeout=15_000, polling=200)
        page.screenshot(path=str(output_dir / "web-no-worker.png"))
    finally:
        page.context.close()


def test_denied_camera_is_explained(
    playwright: Playwright, fake_camera: Path, idle_stack: LiveStack, output_dir: Path
) -> None:
    # Without --use-fake-ui-for-media-stream the permission prompt stays, and headless Chromium denies it.
    denying = launch_chromium(playwright, fake_camera, grant_camera=False)
    try:
        page = open_live_page(denying, idle_stack.url)
        expect(page.get_by_test_id("error")).to_contain_text("Camera access was denied", timeout=15_000)
        expect(page.get_by_test_id("start")).to_be_enabled()
        assert page.evaluate("window.lookout.session") is None
        page.screenshot(path=str(output_dir / "web-camera-denied.png"))
    finally:
        denying.close()
