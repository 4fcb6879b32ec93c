"""web/js/protocol.js in real Chromium: message shape, parsing and the error sentences."""

from __future__ import annotations

from playwright.sync_api import Page


def test_messages_carry_the_protocol_version(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { message } = await import("/js/protocol.js");
          return message("join", { model: "yolox_nano", sample_fps: 10 });
        }"""
    )
    assert got == {"v": 2, "type": "join", "model": "yolox_nano", "sample_fps": 10}


def test_parse_message_rejects_what_is_not_a_typed_object(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { parseMessage } = await import("/js/protocol.js");
          return [parseMessage("{"), parseMessage("[1]"), parseMessage('{"v":2}'),
                  parseMessage('{"v":2,"type":"pong"}')];
        }"""
    )
    assert got == [None, None, None, {"v": 2, "type": "pong"}]


def test_error_sentences_name_the_cause(module_page: Page) -> None:
    got = module_page.evaluate(
        """async () => {
          const { describeError } = await import("/js/protocol.js");
          return {
            worker: describeError("no_worker", "", { model: "yolox_nano" }),
            bridge: describeError("no_bridge"),
            camera: describeError("camera_denied"),
            lost: describeError("connection_lost"),
            other: describeError("bad_state", "offer before join"),
          };
        }"""
    )
    assert "no worker" in got["worker"].lower() and "yolox_nano" in got["worker"]
    assert "no media bridge" in got["bridge"].lower()
    assert "camera access was denied" in got["camera"].lower()
    assert "connection to the server lost" in got["lost"].lower()
    assert got["other"] == "Server error (bad_state): offer before join"
