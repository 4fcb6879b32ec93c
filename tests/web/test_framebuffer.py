"""web/js/framebuffer.js in real Chromium: recent frames by capture time, and matching results to them."""

from __future__ import annotations

from playwright.sync_api import Page


def test_frames_are_found_by_capture_time_and_old_ones_closed(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { FrameBuffer } = await import("/js/framebuffer.js");
          const closed = [];
          const image = (name) => ({ name, close: () => closed.push(name) });
          const buffer = new FrameBuffer({ keepMs: 100, maxFrames: 3 });
          const empty = buffer.atOrBefore(0);
          for (const at of [0, 40, 80, 120]) buffer.push(image(`f${at}`), at);  // f0: over maxFrames
          buffer.push(image("f200"), 200);  // f40 and f80: older than keepMs
          const pick = (at) => buffer.atOrBefore(at).image.name;
          const found = [pick(119), pick(120), pick(199), pick(1000)];
          buffer.clear();
          return { empty, found, closed, left: buffer.frames.length };
        }"""
    )
    assert got["empty"] is None
    assert got["found"] == ["f120", "f120", "f120", "f200"]  # 119: before every kept frame, so the oldest
    assert got["closed"] == ["f0", "f40", "f80", "f120", "f200"]
    assert got["left"] == 0


def test_nearest_result_within_a_distance(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { nearest } = await import("/js/framebuffer.js");
          const results = [{ seq: 1, received_ms: 100 }, { seq: 2, received_ms: 200 }];
          const seq = (at, max) => (nearest(results, at, (r) => r.received_ms, max) || { seq: null }).seq;
          return [seq(140), seq(160), seq(330, 100), seq(330)];
        }"""
    )
    assert got == [1, 2, None, 2]
