// The signaling WebSocket: one JSON message per frame, reconnecting with backoff when it drops.

import { Backoff } from "./backoff.js";
import { message, parseMessage } from "./protocol.js";

/**
 * Events (EventTarget, `event.detail`): "open", "message" (a parsed server message),
 * "lost" ({delayMs}: the socket closed unexpectedly, a reconnect is scheduled).
 */
export class SignalingConnection extends EventTarget {
  constructor(url, { backoff = new Backoff({ initialMs: 500, maxMs: 10000 }), pingMs = 15000 } = {}) {
    super();
    this.url = url;
    this.backoff = backoff;
    this.pingMs = pingMs;
    this.socket = null;
    this.closed = false;
    this.reconnectTimer = null;
    this.pingTimer = null;
  }

  get isOpen() {
    return this.socket !== null && this.socket.readyState === WebSocket.OPEN;
  }

  connect() {
    this.closed = false;
    clearTimeout(this.reconnectTimer);
    const socket = new WebSocket(this.url);
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.emit("open");
      // Keep idle proxies from closing the socket while a session only receives.
      clearInterval(this.pingTimer);
      this.pingTimer = setInterval(() => this.send("ping"), this.pingMs);
    });
    socket.addEventListener("message", (event) => {
      const data = typeof event.data === "string" ? parseMessage(event.data) : null;
      if (data) this.emit("message", data);
    });
    socket.addEventListener("close", () => {
      if (socket !== this.socket) return; // an old socket we already replaced
      clearInterval(this.pingTimer);
      this.socket = null;
      if (this.closed) return;
      const delayMs = this.backoff.next();
      this.emit("lost", { delayMs });
      this.reconnectTimer = setTimeout(() => this.connect(), delayMs);
    });
  }

  /** The server answered (hello): the next loss starts its backoff from the shortest delay again. */
  markHealthy() {
    this.backoff.reset();
  }

  send(type, fields = {}) {
    if (!this.isOpen) return false;
    this.socket.send(JSON.stringify(message(type, fields)));
    return true;
  }

  close() {
    this.closed = true;
    clearTimeout(this.reconnectTimer);
    clearInterval(this.pingTimer);
    if (this.socket) this.socket.close();
    this.socket = null;
  }

  emit(type, detail = null) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
