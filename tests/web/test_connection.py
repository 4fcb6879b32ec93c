"""web/js/connection.js in real Chromium: the signaling socket, its messages and its reconnects.

Playwright answers the WebSocket (``route_web_socket``); the page's own use of it against the real
signaling server is in test_failures.py (signaling restarted).
"""

from __future__ import annotations

import json

from playwright.sync_api import Page, WebSocketRoute

SETUP = """async () => {
  const { SignalingConnection } = await import("/js/connection.js");
  const { Backoff } = await import("/js/backoff.js");
  window.events = [];
  window.conn = new SignalingConnection("ws://localhost/ws", {
    backoff: new Backoff({ initialMs: 100, maxMs: 400, jitter: 0 }),
  });
  for (const type of ["open", "message", "lost"]) {
    window.conn.addEventListener(type, (e) => window.events.push([type, e.detail]));
  }
  window.sentWhileClosed = window.conn.send("ping");
  window.conn.connect();
}"""


def test_messages_both_ways_then_reconnects_with_growing_delays_until_closed(module_page: Page) -> None:
    sockets: list[WebSocketRoute] = []
    received: list[dict[str, object]] = []

    def accept(ws: WebSocketRoute) -> None:
        sockets.append(ws)
        ws.on_message(lambda text: received.append(json.loads(text)))
        ws.send(json.dumps({"v": 2, "type": "hello"}))
        ws.send("not json")  # ignored, with a console warning

    module_page.route_web_socket("ws://localhost/ws", accept)
    module_page.evaluate(SETUP)
    module_page.wait_for_function("() => window.events.length >= 2")
    assert module_page.evaluate("window.sentWhileClosed") is False
    assert module_page.evaluate("window.conn.send('join', { model: 'm' })") is True
    for _ in range(200):  # Playwright hands the frame to the route while the page is waited on
        if received:
            break
        module_page.wait_for_timeout(25)
    assert received == [{"v": 2, "type": "join", "model": "m"}]

    sockets[0].close()
    module_page.wait_for_function("() => window.events.filter((e) => e[0] === 'open').length === 2")
    sockets[1].close()
    module_page.wait_for_function("() => window.events.filter((e) => e[0] === 'open').length === 3")
    events = module_page.evaluate("window.events")
    assert [e[0] for e in events[:2]] == ["open", "message"]
    assert events[1][1] == {"v": 2, "type": "hello"}
    # Backoff grows while nothing marks the connection healthy.
    assert [e[1]["delayMs"] for e in events if e[0] == "lost"] == [100, 200]

    module_page.evaluate("window.conn.close()")
    module_page.wait_for_timeout(600)  # longer than any scheduled reconnect
    assert len(sockets) == 3
    assert module_page.evaluate("window.events.filter((e) => e[0] === 'lost').length") == 2
