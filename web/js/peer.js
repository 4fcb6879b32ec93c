// The WebRTC side of a session: the camera, one send-only peer connection, codec choice and stats.

/** A camera error with a code the page knows how to explain (see protocol.js describeError). */
export class CameraError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

/** Open the camera; throws CameraError with code camera_denied, camera_missing or camera_failed. */
export async function openCamera({ width = 640, height = 480, frameRate = 30 } = {}) {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    throw new CameraError("camera_failed", "this page needs a secure context (https or localhost) for the camera");
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { width: { ideal: width }, height: { ideal: height }, frameRate: { ideal: frameRate } },
    });
    for (const track of stream.getVideoTracks()) {
      // Without this hint Chromium lowers the resolution when the receiver's bandwidth feedback is low
      // (aiortc's is); detection needs detail more than motion smoothness.
      track.contentHint = "detail";
    }
    return stream;
  } catch (err) {
    if (err.name === "NotAllowedError" || err.name === "SecurityError") {
      throw new CameraError("camera_denied", err.message);
    }
    if (err.name === "NotFoundError" || err.name === "OverconstrainedError") {
      throw new CameraError("camera_missing", err.message);
    }
    throw new CameraError("camera_failed", `${err.name}: ${err.message}`);
  }
}

/** Put the codecs whose mimeType is `video/<codec>` first; returns false when the browser has none. */
export function preferCodec(transceiver, codec) {
  if (!codec || typeof RTCRtpSender.getCapabilities !== "function" || !transceiver.setCodecPreferences) {
    return false;
  }
  const wanted = `video/${codec}`.toLowerCase();
  const all = RTCRtpSender.getCapabilities("video").codecs;
  const chosen = all.filter((c) => c.mimeType.toLowerCase() === wanted);
  if (chosen.length === 0) return false;
  // Keep the retransmission/FEC helpers so that packet loss is still repaired.
  const helpers = all.filter((c) => /\/(rtx|red|ulpfec)$/i.test(c.mimeType));
  transceiver.setCodecPreferences([...chosen, ...helpers]);
  return true;
}

/**
 * Wait until ICE gathering is complete, so that one offer carries every candidate (the server does
 * not take trickled candidates). After `timeoutMs` it goes on with what was gathered so far.
 */
export function iceGatheringComplete(pc, timeoutMs = 3000) {
  if (pc.iceGatheringState === "complete") return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => finish(false), timeoutMs);
    function check() {
      if (pc.iceGatheringState === "complete") finish(true);
    }
    function finish(complete) {
      clearTimeout(timer);
      pc.removeEventListener("icegatheringstatechange", check);
      resolve(complete);
    }
    pc.addEventListener("icegatheringstatechange", check);
  });
}

/** A send-only peer connection carrying `track`; returns it with the SDP offer to send. */
export async function createOffer(track, stream, { codec = "", iceTimeoutMs = 3000 } = {}) {
  // No STUN/TURN: the bridge is reached directly (the server side advertises its own addresses).
  const pc = new RTCPeerConnection({ iceServers: [] });
  const transceiver = pc.addTransceiver(track, { direction: "sendonly", streams: [stream] });
  const forced = preferCodec(transceiver, codec);
  if (codec && !forced) console.warn(`lookout: this browser cannot send ${codec}; using its default codec`);
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringComplete(pc, iceTimeoutMs);
  return { pc, sdp: pc.localDescription.sdp };
}

/** The codec the outbound video actually uses, e.g. "video/VP8" (from getStats), or "" before media flows. */
export async function negotiatedCodec(pc) {
  if (!pc) return "";
  const report = await pc.getStats();
  for (const stat of report.values()) {
    if (stat.type === "outbound-rtp" && stat.kind === "video" && stat.codecId) {
      const codec = report.get(stat.codecId);
      if (codec) return codec.mimeType;
    }
  }
  return "";
}
