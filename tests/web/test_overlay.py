"""web/js/overlay.js in real Chromium: box mapping onto the displayed picture, and what gets drawn."""

from __future__ import annotations

from playwright.sync_api import Page

from tests.support.browser import canvas_ink


def test_contain_rect_letterboxes_a_4_3_video_in_a_wide_box(module_page: Page) -> None:
    rect = module_page.evaluate(
        """async () => {
          const { containRect } = await import("/js/overlay.js");
          return containRect(640, 480, 800, 480);
        }"""
    )
    assert rect == {"x": 80, "y": 0, "width": 640, "height": 480}


def test_map_box_scales_from_the_sampled_frame_not_the_video(module_page: Page) -> None:
    # The sampled frame is 320x240 while the picture is shown at 640x480 starting at x=80.
    box = module_page.evaluate(
        """async () => {
          const { mapBox } = await import("/js/overlay.js");
          return mapBox([10, 20, 110, 220], 320, 240, { x: 80, y: 0, width: 640, height: 480 });
        }"""
    )
    assert box == [100, 40, 300, 440]


def test_every_coco_class_gets_its_own_stable_colour(module_page: Page) -> None:
    colours = module_page.evaluate(
        """async () => {
          const { classColour } = await import("/js/overlay.js");
          return [...Array(80).keys()].map(classColour).concat([classColour(0)]);
        }"""
    )
    assert len(set(colours[:80])) == 80
    assert colours[80] == colours[0]


def test_draw_puts_boxes_where_the_result_says_and_clear_wipes_them(module_page: Page) -> None:
    module_page.set_content('<canvas id="overlay" style="width:400px;height:300px"></canvas>')
    drawn = module_page.evaluate(
        """async () => {
          const { Overlay } = await import("/js/overlay.js");
          window.overlay = new Overlay(document.getElementById("overlay"));
          const result = { width: 640, height: 480, detections: [
            { label: "person", class_id: 0, score: 0.9, box: [320, 240, 640, 480] } ] };
          return window.overlay.draw(result, 640, 480);
        }"""
    )
    assert drawn == 1
    alpha = module_page.evaluate(
        """() => {
          const c = document.getElementById("overlay");
          const at = (x, y) => c.getContext("2d").getImageData(x, y, 1, 1).data[3];
          // The box maps to (200,150)-(400,300) on the 400x300 canvas (device pixel ratio 1).
          return { edge: at(200, 225), inside: at(300, 250), outside: at(100, 100), label: at(205, 140) };
        }"""
    )
    assert alpha["edge"] > 0 and alpha["label"] > 0
    assert alpha["inside"] == 0 and alpha["outside"] == 0
    module_page.evaluate("() => window.overlay.clear()")
    assert canvas_ink(module_page) == 0
