// The browser side of the WebSocket signaling protocol (docs/protocol.md, "Signaling over the WebSocket").
// Every message is one JSON object with "v" and "type"; the server's pydantic models live in
// wire/signaling.py. This module only builds messages and turns error codes into sentences.

export const PROTOCOL_VERSION = 2;

/** A message for the server: `{v: 2, type, ...fields}`. */
export function message(type, fields = {}) {
  return { v: PROTOCOL_VERSION, type, ...fields };
}

/** Parse one WebSocket text frame; returns null (and logs) when it is not a protocol message. */
export function parseMessage(text) {
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    console.warn("lookout: ignoring a WebSocket frame that is not JSON", text);
    return null;
  }
  if (data === null || typeof data !== "object" || typeof data.type !== "string") {
    console.warn("lookout: ignoring a WebSocket message without a type", data);
    return null;
  }
  return data;
}

// Error codes after which the page rejoins by itself (with backoff): the cause may go away.
export const RETRYABLE = new Set(["no_bridge", "no_worker", "bridge_timeout", "bridge_lost", "rate_limited"]);

/** A sentence a person can act on, for a server error code (falls back to the server's own text). */
export function describeError(code, serverText = "", context = {}) {
  const model = context.model ? `"${context.model}"` : "this model";
  switch (code) {
    case "camera_denied":
      return "Camera access was denied. Allow the camera for this site in the browser's site settings, then press Start again.";
    case "camera_missing":
      return "No camera was found. Connect a camera (or close the program that uses it), then press Start again.";
    case "camera_failed":
      return `The camera could not be opened: ${serverText}`;
    case "no_bridge":
      return "No media bridge is running, so the server cannot receive video. Start one with `lookout bridge` (or `lookout up`). Retrying…";
    case "no_worker":
      return `No worker is running for model ${model}, so nothing can be detected. Start one with \`lookout worker --model ${context.model || "NAME"}\`. Retrying…`;
    case "bridge_lost":
      return "The media bridge of this session stopped. Rejoining on another bridge…";
    case "bridge_timeout":
      return "The media bridge did not answer in time. Retrying…";
    case "connection_lost":
      return "Connection to the server lost. Reconnecting…";
    case "setup_timeout":
      return "The video connection could not be set up in time. Retrying…";
    case "media_failed":
      return "The video connection to the media bridge failed. Rejoining…";
    case "rate_limited":
      return "Too many joins in a short time. Waiting before the next try…";
    case "unauthorized":
      return "The server needs an API key: open this page with ?key=YOUR_KEY.";
    case "bad_sdp":
      return `The server could not use this browser's video offer: ${serverText}`;
    default:
      return serverText ? `Server error (${code}): ${serverText}` : `Server error: ${code}`;
  }
}
