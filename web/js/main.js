// The Lookout page: camera -> WebRTC -> media bridge; detections come back over the signaling socket
// and are drawn over the video. URL parameters: ?codec=vp8|h264 forces the video codec, ?model= and
// ?fps= preselect the choices, ?key= is passed to the server, ?autostart=1 starts at once, ?sync=0
// shows the live picture with the newest boxes instead of the picture the boxes belong to.

import { SignalingConnection } from "./connection.js";
import { Backoff } from "./backoff.js";
import { FrameBuffer, nearest } from "./framebuffer.js";
import { onEachFrame, wallNowMs } from "./frameclock.js";
import { Overlay, paintContained } from "./overlay.js";
import { CameraError, createOffer, negotiatedCodec, openCamera } from "./peer.js";
import { describeError, RETRYABLE } from "./protocol.js";
import { LiveStats, quantile } from "./stats.js";

const params = new URLSearchParams(location.search);
const FPS_CHOICES = [1, 2, 5, 10, 15, 20, 25, 30];
const BOX_HOLD_MS = 1500; // boxes older than this are wiped: a stalled pipeline must not leave stale boxes
const RECENT_RESULTS = 200; // results kept in window.lookout.results for inspection
const SETUP_TIMEOUT_MS = 20000; // join to media flowing; beyond the server's offer timeout (10 s) plus ICE
const MATCHABLE_RESULTS = 30; // results a shown frame may be matched with (synced display)
const SYNC_MARGIN_MS = 40; // display delay beyond the results' latency: encode and send time, jitter
const MAX_DISPLAY_DELAY_MS = 1000; // a slower pipeline shows older boxes rather than an older picture
const CAN_SYNC = typeof createImageBitmap === "function" && "requestVideoFrameCallback" in HTMLVideoElement.prototype;
const FATAL = new Set(["unknown_model", "unauthorized", "bad_sdp"]); // retrying cannot help: stop and say why

const $ = (id) => document.getElementById(id);
const ui = {
  start: $("start"),
  stop: $("stop"),
  model: $("model-select"),
  fps: $("fps-select"),
  status: $("status"),
  error: $("error"),
  video: $("video"),
  canvas: $("overlay"),
  picture: $("picture"),
  sync: $("sync"),
  rate: $("stat-rate"),
  latency: $("stat-latency"),
  dropped: $("stat-dropped"),
  people: $("stat-people"),
  modelName: $("stat-model"),
  codec: $("stat-codec"),
  session: $("stat-session"),
  list: $("detections"),
};

class LookoutPage {
  constructor() {
    const key = params.get("key");
    const wsUrl = new URL("ws", location.href);
    wsUrl.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (key) wsUrl.searchParams.set("key", key);
    this.codec = (params.get("codec") || "").toLowerCase();
    this.connection = new SignalingConnection(wsUrl.href);
    this.rejoinBackoff = new Backoff({ initialMs: 500, maxMs: 15000 });
    this.overlay = new Overlay(ui.canvas);
    this.stats = new LiveStats();
    this.stream = null; // the camera, kept across rejoins so the user is asked only once
    this.pc = null;
    this.wantLive = false; // the user pressed Start and has not pressed Stop
    this.hello = null;
    this.choicesSignature = ""; // of the model list shown, to rebuild it only when it changes
    this.session = null; // {session, bridge, model, sample_fps} of the current join
    this.joinPending = false;
    this.choiceChanged = false; // the model or rate changed while a join was in flight
    this.unansweredByes = 0; // the server answers each bye with a bye: those are not hang-ups of its own
    this.rejoinTimer = null;
    this.setupTimer = null; // fires when a join has not led to connected media in time
    this.pending = null; // the newest result, not drawn yet (live display)
    this.matchable = []; // recent results of this session, by seq (synced display)
    this.frames = new FrameBuffer();
    this.setSync(CAN_SYNC && params.get("sync") !== "0");
    this.shown = null; // the result whose boxes are on screen, with the wall time it was drawn
    this.results = [];
    this.bridges = []; // every bridge joined, in order (tests check rejoin picks a live one)
    this.foreignResults = 0; // results for another session: must stay 0
    this.lateResults = 0; // results older than one already shown (overtaken), not drawn
    this.newestSeq = -1; // of the current session
    this.lastError = null;
    this.errors = []; // every error shown, oldest first: what the page reported, for tests and the console
    this.stopFrames = onEachFrame(ui.video, (metadata) => this.onFrame(metadata));
    // Safety net: a hidden tab or paused video gets no frame callbacks, but results must still show.
    setInterval(() => this.onFrame(null, 250), 250);
    setInterval(() => this.renderPanel(), 1000);
    // Workers come and go: keep the model list current (the server answers with "models").
    setInterval(() => this.connection.send("list_models"), 5000);

    this.connection.addEventListener("open", () => this.setStatus("Connected; waiting for the server…"));
    this.connection.addEventListener("message", (event) => this.onMessage(event.detail));
    this.connection.addEventListener("lost", (event) => this.onConnectionLost(event.detail.delayMs));
    ui.start.addEventListener("click", () => this.start());
    ui.stop.addEventListener("click", () => this.stop());
    ui.model.addEventListener("change", () => this.onChoiceChanged());
    ui.fps.addEventListener("change", () => this.onChoiceChanged());
    ui.sync.addEventListener("change", () => this.setSync(ui.sync.checked));
    window.addEventListener("pagehide", () => this.connection.send("bye", { reason: "page closed" }));
    this.setStatus("Connecting to the server…");
    this.connection.connect();
    this.renderPanel();
    if (params.get("autostart") === "1") this.start();
  }

  // --- user actions ------------------------------------------------------------------------------

  async start() {
    if (this.wantLive) return;
    this.wantLive = true;
    this.clearError();
    this.updateButtons();
    if (!this.stream) {
      this.setStatus("Opening the camera…");
      try {
        this.stream = await openCamera();
      } catch (err) {
        this.wantLive = false;
        this.updateButtons();
        const code = err instanceof CameraError ? err.code : "camera_failed";
        this.showError(code, err.message);
        this.setStatus("Stopped: no camera.");
        return;
      }
      ui.video.srcObject = this.stream;
      ui.video.play().catch(() => {}); // muted autoplay is allowed; a failure only delays the picture
    }
    if (this.connection.isOpen && this.hello) this.join();
    else this.setStatus("Camera ready; waiting for the server…");
  }

  stop() {
    this.wantLive = false;
    clearTimeout(this.rejoinTimer);
    this.hangUp("stopped by the user");
    if (this.stream) {
      for (const track of this.stream.getTracks()) track.stop();
      this.stream = null;
      ui.video.srcObject = null;
      this.frames.clear();
      ui.picture.getContext("2d").clearRect(0, 0, ui.picture.width, ui.picture.height);
    }
    this.clearError();
    this.setStatus("Stopped. Press Start to share your camera again.");
    this.updateButtons();
  }

  onChoiceChanged() {
    if (!this.wantLive) return;
    // A join in flight is answered first (one request at a time on the socket); then start over.
    if (this.joinPending) this.choiceChanged = true;
    if (!this.session) return; // otherwise the next join (a retry) uses the new choice anyway
    // A new model or rate is a new session: hang up and join again with the new choice.
    this.hangUp("choice changed");
    this.join();
  }

  // --- session -----------------------------------------------------------------------------------

  join() {
    clearTimeout(this.rejoinTimer);
    if (!this.wantLive || !this.stream || this.joinPending) return;
    const fields = {};
    if (ui.model.value) fields.model = ui.model.value;
    if (ui.fps.value) fields.sample_fps = Number(ui.fps.value);
    this.joinPending = true;
    this.setStatus(`Joining (model ${fields.model || "default"})…`);
    if (!this.connection.send("join", fields)) {
      this.joinPending = false;
      return;
    }
    // Whatever gets lost on the way (a reply, an ICE check), a join that does not end live is retried.
    clearTimeout(this.setupTimer);
    this.setupTimer = setTimeout(() => this.onSetupTimeout(), SETUP_TIMEOUT_MS);
  }

  onSetupTimeout() {
    if (!this.wantLive || this.isConnected()) return;
    this.hangUp("setup timed out");
    this.showError("setup_timeout");
    this.scheduleRejoin();
  }

  isConnected() {
    return this.pc !== null && this.pc.connectionState === "connected";
  }

  scheduleRejoin() {
    clearTimeout(this.rejoinTimer);
    if (!this.wantLive) return;
    const delayMs = this.rejoinBackoff.next();
    this.rejoinTimer = setTimeout(() => this.join(), delayMs);
    return delayMs;
  }

  async onJoined(msg) {
    this.joinPending = false;
    if (!this.wantLive || !this.stream) return; // stopped meanwhile: the bye sent then ends it there
    this.session = msg;
    if (this.choiceChanged) {
      this.choiceChanged = false;
      this.hangUp("choice changed");
      this.join();
      return;
    }
    this.bridges.push(msg.bridge);
    this.clearPanel();
    this.setStatus(`Connecting video to bridge ${msg.bridge}…`);
    const track = this.stream.getVideoTracks()[0];
    try {
      const { pc, sdp } = await createOffer(track, this.stream, { codec: this.codec });
      if (this.session !== msg) {
        pc.close(); // the session ended while ICE was gathering
        return;
      }
      this.pc = pc;
      pc.addEventListener("connectionstatechange", () => this.onPeerState(pc));
      this.connection.send("offer", { sdp });
    } catch (err) {
      this.showError("internal", `could not create the video offer: ${err.message}`);
    }
  }

  async onAnswer(msg) {
    if (!this.pc) return;
    try {
      await this.pc.setRemoteDescription({ type: "answer", sdp: msg.sdp });
    } catch (err) {
      this.hangUp("unusable answer");
      this.wantLive = false;
      this.updateButtons();
      this.showError("bad_sdp", `the bridge's answer was not usable: ${err.message}`);
    }
  }

  onPeerState(pc) {
    if (pc !== this.pc) return;
    const state = pc.connectionState;
    if (state === "connected") {
      clearTimeout(this.setupTimer);
      this.rejoinBackoff.reset();
      this.clearError();
      const s = this.session;
      this.setStatus(`Live on bridge ${s.bridge}: model ${s.model}, ${s.sample_fps} frames/s sent for detection.`);
    } else if (state === "failed") {
      // The media path broke without the server telling us (yet): start over on a fresh session.
      this.hangUp("media connection failed");
      this.showError("media_failed");
      this.scheduleRejoin();
    }
  }

  /** End the session on the server too (if there is one), then here. */
  hangUp(reason) {
    if ((this.session || this.joinPending) && this.connection.send("bye", { reason })) this.unansweredByes += 1;
    this.endSession();
  }

  /** Close the peer connection and forget the session (the camera stays open). */
  endSession() {
    clearTimeout(this.setupTimer);
    this.session = null;
    this.joinPending = false;
    this.choiceChanged = false; // the next join takes the current choice anyway
    if (this.pc) {
      this.pc.close();
      this.pc = null;
    }
    this.clearPanel();
  }

  // --- server messages ---------------------------------------------------------------------------

  onMessage(msg) {
    switch (msg.type) {
      case "hello":
      case "models":
        this.onModels(msg);
        break;
      case "joined":
        this.onJoined(msg);
        break;
      case "answer":
        this.onAnswer(msg);
        break;
      case "detections":
        this.onDetections(msg);
        break;
      case "stats":
        if (this.session) this.stats.setServerStats(msg);
        break;
      case "error":
        this.onServerError(msg);
        break;
      case "bye":
        if (this.unansweredByes > 0) {
          this.unansweredByes -= 1; // the server confirms our own hang-up
          break;
        }
        this.endSession();
        this.setStatus(`The server ended the session${msg.reason ? `: ${msg.reason}` : ""}.`);
        this.scheduleRejoin();
        break;
      case "pong":
        break;
      default:
        console.warn("lookout: unknown message type", msg.type);
    }
  }

  onModels(msg) {
    this.hello = msg;
    this.connection.markHealthy();
    this.fillChoices(msg);
    if (msg.type !== "hello") return;
    // A fresh socket (first or after a reconnect): any old session went with the old socket.
    if (this.lastError && this.lastError.code === "connection_lost") this.clearError();
    if (this.wantLive) this.join();
    else this.setStatus("Connected. Press Start to share your camera.");
  }

  fillChoices(msg) {
    // Rebuilt only when something changed: rebuilding closes a menu the user may have open.
    const signature = JSON.stringify([msg.models, msg.default_model, msg.sample_fps, msg.max_sample_fps]);
    if (signature === this.choicesSignature) return;
    this.choicesSignature = signature;
    const wantedModel = ui.model.value || params.get("model") || msg.default_model;
    ui.model.replaceChildren();
    const names = msg.models.map((m) => m.name);
    if (!names.includes(msg.default_model)) names.unshift(msg.default_model);
    if (wantedModel && !names.includes(wantedModel)) names.push(wantedModel);
    for (const name of names) {
      const entry = msg.models.find((m) => m.name === name);
      const workers = entry ? entry.workers : 0;
      const option = new Option(`${name} (${workers} worker${workers === 1 ? "" : "s"})`, name);
      option.disabled = workers === 0; // only models some worker serves can be chosen
      ui.model.add(option);
    }
    ui.model.value = wantedModel;

    const wantedFps = Number(ui.fps.value || params.get("fps") || msg.sample_fps);
    ui.fps.replaceChildren();
    const rates = new Set(FPS_CHOICES.filter((f) => f <= msg.max_sample_fps));
    rates.add(msg.sample_fps);
    if (wantedFps <= msg.max_sample_fps) rates.add(wantedFps);
    for (const fps of [...rates].sort((a, b) => a - b)) ui.fps.add(new Option(`${fps} fps`, String(fps)));
    ui.fps.value = String(rates.has(wantedFps) ? wantedFps : msg.sample_fps);
  }

  onDetections(msg) {
    if (!this.session || msg.session !== this.session.session) {
      this.foreignResults += 1; // never expected: the server routes by session
      return;
    }
    // With several workers results can overtake each other; an older frame's boxes would step back in time.
    if (msg.seq <= this.newestSeq) {
      this.lateResults += 1;
      return;
    }
    this.newestSeq = msg.seq;
    msg.received = wallNowMs();
    this.pending = msg; // a newer result replaces an undrawn one: only the latest boxes matter
    this.matchable.push(msg);
    if (this.matchable.length > MATCHABLE_RESULTS) this.matchable.shift();
  }

  onServerError(msg) {
    const code = msg.code;
    const settingUp = this.joinPending || (this.session !== null && !this.isConnected());
    // While a join is pending, an error is its answer (the server handles one message at a time):
    // without this a refused join would block every later join.
    this.joinPending = false;
    this.showError(code, msg.message);
    if (FATAL.has(code)) {
      // After bad_sdp the server keeps the session for another offer, which this page cannot improve
      // on: hang up there too. The other fatal codes refuse a join, so there is nothing to hang up.
      this.hangUp(`stopped after ${code}`);
      this.wantLive = false;
      this.updateButtons();
      this.setStatus("Stopped.");
      return;
    }
    if (RETRYABLE.has(code)) {
      this.endSession(); // the server already ended it, or never started it
    } else if (settingUp) {
      // bad_state, internal, ...: the join or offer was refused. The server may still hold a session
      // this page does not know (bad_state), so always say bye before joining again.
      if (this.connection.send("bye", { reason: `restarting after ${code}` })) this.unansweredByes += 1;
      this.endSession();
    } else {
      return; // a complaint about some other message: the live session carries on
    }
    const delayMs = this.scheduleRejoin();
    if (delayMs !== undefined) this.setStatus(`Not live. Retrying in ${(delayMs / 1000).toFixed(1)} s…`);
  }

  onConnectionLost(delayMs) {
    const wasLive = this.session !== null;
    this.endSession();
    this.unansweredByes = 0; // a new socket starts with no hang-up pending
    this.hello = null;
    this.showError("connection_lost");
    this.setStatus(`Connection to the server lost${wasLive ? " (session ended)" : ""}. Reconnecting in ${(delayMs / 1000).toFixed(1)} s…`);
  }

  // --- drawing -----------------------------------------------------------------------------------

  /**
   * Synced display (default): the page keeps the last second of camera frames and shows the picture
   * delayed by about the results' latency, each frame with the boxes of the result computed from it
   * (or from the sampled frame nearest to it). Live display: the live video with the newest boxes,
   * which trail moving objects by the latency.
   */
  setSync(on) {
    this.sync = Boolean(on && CAN_SYNC);
    ui.sync.checked = this.sync;
    ui.sync.disabled = !CAN_SYNC;
    ui.picture.hidden = !this.sync;
    this.frames.clear();
    this.overlay.clear();
  }

  /** Once per video frame (or from the safety timer, without metadata). */
  onFrame(metadata, minWaitMs = 0) {
    if (this.sync && metadata) this.showSyncedFrame(metadata);
    else if (!this.sync || this.frames.frames.length === 0) this.showLiveFrame(metadata, minWaitMs);
  }

  /** Live display: draw the newest result over the live video, or wipe boxes gone stale. */
  showLiveFrame(metadata, minWaitMs) {
    const now = wallNowMs();
    const result = this.pending;
    if (result && now - result.received >= minWaitMs) {
      const width = (metadata && metadata.width) || ui.video.videoWidth;
      const height = (metadata && metadata.height) || ui.video.videoHeight;
      this.overlay.draw(result, width, height);
      this.drawn(result, now);
    } else if (this.shown && now - this.shown.drawnAt > BOX_HOLD_MS) {
      this.overlay.clear();
      this.shown = null;
    }
  }

  /** Synced display: keep this frame, show the one captured a latency ago with its own boxes. */
  showSyncedFrame(metadata) {
    const capturedAt = performance.timeOrigin + (metadata.captureTime ?? metadata.presentationTime);
    createImageBitmap(ui.video).then(
      (bitmap) => (this.sync ? this.frames.push(bitmap, capturedAt) : bitmap.close()),
      () => {}, // no picture yet (the video is starting): nothing to keep
    );
    const now = wallNowMs();
    const frame = this.frames.atOrBefore(now - this.displayDelayMs());
    if (!frame) return;
    paintContained(ui.picture, frame.image, frame.image.width, frame.image.height);
    // A frame that was not sampled gets the boxes of the nearest sampled one, within one sample interval.
    // `received_ms` is when the bridge got the frame: it trails the browser's capture time (`frame.at`)
    // by the uplink delay (encode, network, decode: a few ms on a LAN), well inside one sample interval.
    const interval = 1000 / ((this.session && this.session.sample_fps) || 10);
    const result = nearest(this.matchable, frame.at, (r) => r.received_ms, interval);
    if (!result) {
      this.overlay.clear();
      return;
    }
    this.overlay.draw(result, frame.image.width, frame.image.height);
    if (!result.drawnAt) this.drawn(result, now);
  }

  /** How far behind the camera the synced picture runs: most results have arrived by then. */
  displayDelayMs() {
    const waits = this.matchable.map((r) => r.received - r.received_ms);
    if (waits.length === 0) return 0;
    return Math.min(MAX_DISPLAY_DELAY_MS, quantile(waits, 0.9) + SYNC_MARGIN_MS);
  }

  /** A result's boxes are on screen for the first time: count it (received-to-drawn latency). */
  drawn(result, now) {
    if (this.pending === result) this.pending = null;
    result.drawnAt = now;
    const latencyMs = now - result.received_ms;
    this.stats.addResult(result, latencyMs, now);
    this.shown = { result, drawnAt: now };
    this.remember(result, latencyMs);
    this.renderDetections(result);
    this.renderNumbers();
  }

  remember(result, latencyMs) {
    this.results.push({
      session: result.session,
      seq: result.seq,
      received_ms: result.received_ms,
      width: result.width,
      height: result.height,
      model: result.model,
      worker: result.worker,
      labels: result.detections.map((d) => d.label),
      latency_ms: latencyMs,
    });
    if (this.results.length > RECENT_RESULTS) this.results.shift();
  }

  renderDetections(result) {
    const counts = new Map();
    for (const det of result.detections) counts.set(det.label, (counts.get(det.label) || 0) + 1);
    const items = [...counts].sort((a, b) => b[1] - a[1]).map(([label, n]) => {
      const li = document.createElement("li");
      li.textContent = n > 1 ? `${label} × ${n}` : label;
      li.dataset.label = label;
      return li;
    });
    ui.list.replaceChildren(...items);
  }

  /** The whole panel, about once a second (the rate decays to zero when results stop). */
  renderPanel() {
    this.renderNumbers();
    if (this.pc) negotiatedCodec(this.pc).then((c) => (ui.codec.textContent = c || "–"));
    else ui.codec.textContent = "–";
  }

  /** The numbers that change with every result drawn. */
  renderNumbers() {
    const now = wallNowMs();
    const p50 = this.stats.latencyP50();
    ui.rate.textContent = this.stats.results ? this.stats.rate(now).toFixed(1) : "–";
    ui.latency.textContent = Number.isFinite(p50) ? `${Math.round(p50)} ms` : "–";
    ui.latency.dataset.value = Number.isFinite(p50) ? String(Math.round(p50)) : "";
    ui.dropped.textContent = String(this.stats.dropped);
    ui.dropped.title = Object.entries(this.stats.dropsByReason).map(([r, n]) => `${r}: ${n}`).join(", ") || "no drops";
    ui.people.textContent = this.stats.results ? String(this.stats.people) : "–";
    const last = this.shown ? this.shown.result : null;
    ui.modelName.textContent = last ? last.model : this.session ? this.session.model : "–";
    ui.modelName.title = last && last.model_version ? `version ${last.model_version}` : "";
    ui.session.textContent = this.session ? this.session.session : "–";
    ui.session.title = this.session ? `bridge ${this.session.bridge}` : "";
  }

  /** Reset the live panel and the overlay (a new session must not show the old one's numbers). */
  clearPanel() {
    this.stats.clear();
    this.newestSeq = -1;
    this.pending = null;
    this.matchable = [];
    this.shown = null;
    this.overlay.clear();
    ui.list.replaceChildren();
    this.renderPanel();
  }

  // --- status and errors -------------------------------------------------------------------------

  setStatus(text) {
    ui.status.textContent = text;
  }

  showError(code, serverText = "") {
    const model = (this.session && this.session.model) || ui.model.value;
    this.lastError = { code, message: describeError(code, serverText, { model }), at: wallNowMs() };
    this.errors.push(this.lastError);
    if (this.errors.length > 50) this.errors.shift();
    ui.error.textContent = this.lastError.message;
    ui.error.dataset.code = code;
    ui.error.hidden = false;
  }

  clearError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
    delete ui.error.dataset.code;
  }

  updateButtons() {
    ui.start.disabled = this.wantLive;
    ui.stop.disabled = !this.wantLive;
  }
}

const page = new LookoutPage();

// What tests and curious people can inspect from the console.
window.lookout = {
  page,
  get session() {
    return page.session ? page.session.session : null;
  },
  get bridge() {
    return page.session ? page.session.bridge : null;
  },
  get bridges() {
    return [...page.bridges];
  },
  get results() {
    return page.results;
  },
  get foreignResults() {
    return page.foreignResults;
  },
  get lateResults() {
    return page.lateResults;
  },
  get error() {
    return page.lastError;
  },
  get errors() {
    return [...page.errors];
  },
  get connected() {
    return page.isConnected();
  },
  codec: () => negotiatedCodec(page.pc),
  start: () => page.start(),
  stop: () => page.stop(),
};
