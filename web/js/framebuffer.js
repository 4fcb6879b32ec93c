// Recent camera frames by wall-clock capture time. Results come back ~100 ms after their frame was
// captured; keeping the frames lets the page show each result's boxes on the frame they were computed
// from, by showing the picture delayed by that latency.

export class FrameBuffer {
  /** Keeps frames for `keepMs` and at most `maxFrames` of them; older ones are closed (memory). */
  constructor({ keepMs = 1500, maxFrames = 45 } = {}) {
    this.keepMs = keepMs;
    this.maxFrames = maxFrames;
    this.frames = []; // {image, at}, oldest first; `image` has close() (ImageBitmap or VideoFrame)
  }

  /** Add a frame captured at wall-clock `atMs` (frames arrive in capture order). */
  push(image, atMs) {
    this.frames.push({ image, at: atMs });
    while (this.frames.length > this.maxFrames || atMs - this.frames[0].at > this.keepMs) {
      this.frames.shift().image.close();
    }
  }

  /** The newest frame captured at or before `atMs`; the oldest one when all are newer; null when empty. */
  atOrBefore(atMs) {
    for (let i = this.frames.length - 1; i >= 0; i -= 1) {
      if (this.frames[i].at <= atMs) return this.frames[i];
    }
    return this.frames[0] || null;
  }

  clear() {
    for (const frame of this.frames) frame.image.close();
    this.frames = [];
  }
}

/** The item whose `key(item)` is closest to `at`, if that is within `maxDistance`; else null. */
export function nearest(items, at, key, maxDistance = Infinity) {
  let best = null;
  let bestDistance = maxDistance;
  for (const item of items) {
    const distance = Math.abs(key(item) - at);
    if (distance <= bestDistance) {
      best = item;
      bestDistance = distance;
    }
  }
  return best;
}
