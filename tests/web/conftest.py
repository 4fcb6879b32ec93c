"""Fixtures of the browser tests: one headless Chromium for the whole package, with a fake webcam that
plays the first 100 frames of vtest.mp4 (pedestrians), and a fresh page per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from tests.support.browser import launch_chromium, serve_web_dir, write_y4m

WEB_TESTS = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every test here drives real Chromium: mark them (``-m "not browser"`` skips them)."""
    for item in items:
        if WEB_TESTS in item.path.parents:
            item.add_marker(pytest.mark.browser)


@pytest.fixture(scope="package")
def fake_camera(video_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_y4m(video_path, tmp_path_factory.mktemp("camera") / "vtest.y4m", frames=100)


@pytest.fixture(scope="package")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="package")
def browser(playwright: Playwright, fake_camera: Path) -> Iterator[Browser]:
    running = launch_chromium(playwright, fake_camera)
    yield running
    running.close()


@pytest.fixture
def module_page(browser: Browser) -> Iterator[Page]:
    """A page on an in-Playwright origin serving web/, for unit tests of the ES modules."""
    context = browser.new_context()
    page = context.new_page()
    origin = serve_web_dir(page)
    page.goto(f"{origin}/blank.html")
    yield page
    context.close()
