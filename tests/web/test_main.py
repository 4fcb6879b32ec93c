"""web/js/main.js (the page) in real Chromium, against a scripted signaling server.

Playwright stands in for the WebSocket (``route_web_socket``), so these tests drive the page's own logic
(choices, errors, drawing, panel, rejoin, reconnect) quickly and exactly; tests/web/test_live.py and
test_failures.py run the same page against the real stack.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, WebSocketRoute, expect

from tests.support.browser import canvas_ink, serve_web_dir, wait_for_ink

EMPTY = "\u2013"  # the en dash the panel shows for "no value"
HELLO = {"v": 2, "type": "hello", "default_model": "yolox_nano", "sample_fps": 10, "max_sample_fps": 30}


class ScriptedServer:
    """Records what the page sends over /ws and lets the test answer; one entry per connection."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.sockets: list[WebSocketRoute] = []
        self.received: list[dict[str, Any]] = []
        self.workers = 2
        page.route_web_socket("**/ws", self.accept)

    def accept(self, ws: WebSocketRoute) -> None:
        self.sockets.append(ws)
        ws.on_message(lambda text: self.received.append(json.loads(text)))
        ws.send(json.dumps({**HELLO, "models": [{"name": "yolox_nano", "workers": self.workers}]}))

    def send(self, message: dict[str, Any]) -> None:
        self.sockets[-1].send(json.dumps({"v": 2, **message}))

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.received if m["type"] == kind]

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout_s: float = 15) -> None:
        """Let the page run (Playwright delivers WebSocket events while it waits) until ``predicate``."""
        deadline = time.monotonic() + timeout_s
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; page sent {self.received}")
            self.page.wait_for_timeout(50)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    page = context.new_page()
    yield page
    context.close()


@pytest.fixture
def server(page: Page) -> ScriptedServer:
    server = ScriptedServer(page)
    origin = serve_web_dir(page)
    # The live display: boxes stay up to 1.5 s after their result, so a test can look at them.
    page.goto(f"{origin}/index.html?codec=vp8&sync=0")
    return server


def joined(server: ScriptedServer, session: str, bridge: str = "b-1") -> None:
    server.send(
        {"type": "joined", "session": session, "bridge": bridge, "model": "yolox_nano", "sample_fps": 10}
    )


def detections(session: str, seq: int, labels: list[str], received_ms: float | None = None) -> dict[str, Any]:
    boxes = [
        {
            "label": label,
            "class_id": 0 if label == "person" else 2,
            "score": 0.8,
            "box": [40 + 60 * i, 40, 90 + 60 * i, 200],
        }
        for i, label in enumerate(labels)
    ]
    return {
        "type": "detections",
        "session": session,
        "seq": seq,
        "received_ms": received_ms if received_ms is not None else time.time() * 1000 - 40,
        "width": 480,
        "height": 360,
        "model": "yolox_nano",
        "model_version": "v1",
        "worker": "w-1",
        "detections": boxes,
        "timings": {},
        "latency_ms": 30,
    }


def start_session(page: Page, server: ScriptedServer, session: str = "s-1") -> None:
    server.wait_for(lambda: len(server.sockets) == 1, "the page to connect")
    page.get_by_test_id("start").click()
    server.wait_for(lambda: len(server.of_type("join")) == 1, "a join")
    joined(server, session)
    server.wait_for(lambda: len(server.of_type("offer")) == 1, "the offer")


def test_choices_come_from_hello_and_join_sends_them(page: Page, server: ScriptedServer) -> None:
    server.wait_for(lambda: len(server.sockets) == 1, "the page to connect")
    expect(page.get_by_test_id("model-select")).to_have_value("yolox_nano")
    page.get_by_test_id("fps-select").select_option("5")
    page.get_by_test_id("start").click()
    server.wait_for(lambda: len(server.of_type("join")) == 1, "a join")
    assert server.of_type("join")[0] == {"v": 2, "type": "join", "model": "yolox_nano", "sample_fps": 5}
    rates = page.get_by_test_id("fps-select").locator("option").all_inner_texts()
    assert rates[-1] == "30 fps"  # max_sample_fps caps the choice


def test_offer_is_complete_and_uses_the_codec_from_the_url(page: Page, server: ScriptedServer) -> None:
    start_session(page, server)
    sdp = server.of_type("offer")[0]["sdp"]
    assert "a=candidate:" in sdp and "VP8/90000" in sdp and "H264/90000" not in sdp


def test_results_are_drawn_and_counted_and_foreign_ones_ignored(page: Page, server: ScriptedServer) -> None:
    start_session(page, server, "s-mine")
    server.send(detections("s-other", 1, ["car"]))
    server.send(detections("s-mine", 1, ["person", "person", "car"]))
    server.send({"type": "stats", "inferred": 1, "dropped": 3, "by_reason": {"deadline": 3}})
    expect(page.get_by_test_id("stat-people")).to_have_text("2")
    expect(page.get_by_test_id("stat-dropped")).to_have_text("3")
    expect(page.get_by_test_id("stat-latency")).to_have_text(re.compile(r"^\d+ ms$"))
    expect(page.get_by_test_id("detections")).to_contain_text("person \u00d7 2")
    wait_for_ink(page)
    assert page.evaluate("window.lookout.foreignResults") == 1
    assert page.evaluate("window.lookout.results.map(r => [r.session, r.seq])") == [["s-mine", 1]]


def test_no_worker_is_explained_and_retried(page: Page, server: ScriptedServer) -> None:
    server.wait_for(lambda: len(server.sockets) == 1, "the page to connect")
    page.get_by_test_id("start").click()
    server.wait_for(lambda: len(server.of_type("join")) == 1, "a join")
    server.send({"type": "error", "code": "no_worker", "message": "no live worker serves yolox_nano"})
    expect(page.get_by_test_id("error")).to_contain_text("No worker is running")
    server.wait_for(lambda: len(server.of_type("join")) == 2, "a second join after backoff")


def test_bridge_lost_clears_the_panel_and_rejoins(page: Page, server: ScriptedServer) -> None:
    start_session(page, server, "s-1")
    server.send(detections("s-1", 1, ["person"]))
    expect(page.get_by_test_id("stat-people")).to_have_text("1")
    server.send({"type": "error", "code": "bridge_lost", "message": "bridge b-1 stopped"})
    expect(page.get_by_test_id("error")).to_contain_text("media bridge of this session stopped")
    expect(page.get_by_test_id("stat-people")).to_have_text(EMPTY)
    assert canvas_ink(page) == 0
    server.wait_for(lambda: len(server.of_type("join")) == 2, "a rejoin")
    joined(server, "s-2", bridge="b-2")
    server.wait_for(lambda: len(server.of_type("offer")) == 2, "a new offer")
    assert page.evaluate("[window.lookout.session, window.lookout.bridges]") == ["s-2", ["b-1", "b-2"]]


def test_lost_connection_is_reported_then_reconnected_and_rejoined(
    page: Page, server: ScriptedServer
) -> None:
    start_session(page, server, "s-1")
    server.send(detections("s-1", 1, ["person"]))
    expect(page.get_by_test_id("stat-people")).to_have_text("1")
    server.sockets[-1].close()
    expect(page.get_by_test_id("status")).to_contain_text("Connection to the server lost")
    expect(page.get_by_test_id("stat-people")).to_have_text(EMPTY)
    server.wait_for(lambda: len(server.sockets) == 2, "a reconnect")
    server.wait_for(lambda: len(server.of_type("join")) == 2, "a rejoin on the new socket")
    expect(page.get_by_test_id("error")).to_be_hidden()


def test_stop_says_bye_and_releases_the_camera_and_start_works_again(
    page: Page, server: ScriptedServer
) -> None:
    start_session(page, server)
    page.get_by_test_id("stop").click()
    server.wait_for(lambda: len(server.of_type("bye")) == 1, "a bye")
    expect(page.get_by_test_id("status")).to_contain_text("Stopped")
    assert page.evaluate("document.getElementById('video').srcObject") is None
    assert page.evaluate("window.lookout.session") is None

    # Start again: a new camera stream, and frames (which the synced display draws on) flow again.
    page.get_by_test_id("start").click()
    server.wait_for(lambda: len(server.of_type("join")) == 2, "a second join")
    joined(server, "s-2")
    server.wait_for(lambda: len(server.of_type("offer")) == 2, "a second offer")
    server.send(detections("s-2", 1, ["person"]))
    expect(page.get_by_test_id("stat-people")).to_have_text("1")
    wait_for_ink(page)


def test_an_overtaken_result_is_not_drawn_over_a_newer_one(page: Page, server: ScriptedServer) -> None:
    start_session(page, server, "s-1")
    server.send(detections("s-1", 7, ["person"]))
    server.send(detections("s-1", 6, ["car"]))  # a slower worker's older frame arrives second
    server.wait_for(lambda: page.evaluate("window.lookout.lateResults") == 1, "the late result to be counted")
    page.wait_for_function("() => window.lookout.results.length === 1")
    assert page.evaluate("window.lookout.results.map((r) => r.seq)") == [7]
    expect(page.get_by_test_id("detections")).to_have_text("person")


def test_a_refused_join_is_hung_up_and_retried(page: Page, server: ScriptedServer) -> None:
    server.wait_for(lambda: len(server.sockets) == 1, "the page to connect")
    page.get_by_test_id("start").click()
    server.wait_for(lambda: len(server.of_type("join")) == 1, "a join")
    server.send(
        {"type": "error", "code": "bad_state", "message": "session s-0 is live; send bye before joining"}
    )
    server.wait_for(lambda: len(server.of_type("join")) == 2, "a second join")
    kinds = [m["type"] for m in server.received if m["type"] in ("join", "bye")]
    assert kinds == ["join", "bye", "join"]  # the stale server session is ended first
    server.send({"type": "bye", "reason": "no live session"})  # the reply to that bye: not a hang-up
    joined(server, "s-1")
    server.wait_for(lambda: len(server.of_type("offer")) == 1, "the offer")
    assert page.evaluate("window.lookout.session") == "s-1"


def test_synced_display_shows_frames_delayed_with_their_own_boxes(page: Page, server: ScriptedServer) -> None:
    page.goto(page.url.replace("&sync=0", ""))  # the default display
    server.wait_for(lambda: len(server.sockets) == 2, "the reloaded page to connect")
    expect(page.get_by_test_id("sync")).to_be_checked()
    page.get_by_test_id("start").click()
    server.wait_for(lambda: len(server.of_type("join")) == 1, "a join")
    joined(server, "s-1")
    server.wait_for(lambda: len(server.of_type("offer")) == 1, "the offer")
    boxes_seen = False
    for seq in range(1, 40):  # a result every 100 ms, each for a frame captured 40 ms before
        server.send(detections("s-1", seq, ["person"]))
        page.wait_for_timeout(100)
        if canvas_ink(page) > 0:
            boxes_seen = True
            break
    assert boxes_seen
    assert canvas_ink(page, "#picture") > 0  # the delayed picture is painted under the boxes
    delay = page.evaluate("window.lookout.page.displayDelayMs()")
    assert 40 <= delay <= 1000  # at least the results' latency, never more than the cap


def test_a_choice_changed_during_a_join_starts_over_with_it(page: Page, server: ScriptedServer) -> None:
    server.wait_for(lambda: len(server.sockets) == 1, "the page to connect")
    page.get_by_test_id("start").click()
    server.wait_for(lambda: len(server.of_type("join")) == 1, "a join")
    page.get_by_test_id("fps-select").select_option("5")  # before the server answers the join
    joined(server, "s-old")
    server.wait_for(lambda: len(server.of_type("join")) == 2, "a join with the new rate")
    kinds = [m["type"] for m in server.received if m["type"] in ("join", "bye", "offer")]
    assert kinds == ["join", "bye", "join"]  # no offer for the stale session
    assert server.of_type("join")[1]["sample_fps"] == 5


def test_stop_during_a_join_ignores_its_late_answer(page: Page, server: ScriptedServer) -> None:
    server.wait_for(lambda: len(server.sockets) == 1, "the page to connect")
    page.get_by_test_id("start").click()
    server.wait_for(lambda: len(server.of_type("join")) == 1, "a join")
    page.get_by_test_id("stop").click()
    server.wait_for(lambda: len(server.of_type("bye")) == 1, "the bye")
    joined(server, "s-late")  # the server answered the join before it read the bye
    server.send({"type": "bye", "reason": "session ended"})
    page.wait_for_timeout(300)
    assert page.evaluate("window.lookout.session") is None
    assert server.of_type("offer") == []
    expect(page.get_by_test_id("status")).to_contain_text("Stopped")
