// Calls back once per video frame shown: requestVideoFrameCallback where the browser has it, else
// requestAnimationFrame (Firefox before 132). Drawing in step with frames keeps boxes on the picture.

/** Start calling `callback(metadata | null)` on every presented frame of `video`; returns a stop function. */
export function onEachFrame(video, callback) {
  let stopped = false;
  if (typeof video.requestVideoFrameCallback === "function") {
    let handle = 0;
    const tick = (_now, metadata) => {
      if (stopped) return;
      callback(metadata);
      handle = video.requestVideoFrameCallback(tick);
    };
    handle = video.requestVideoFrameCallback(tick);
    return () => {
      stopped = true;
      video.cancelVideoFrameCallback(handle);
    };
  }
  let handle = 0;
  const tick = () => {
    if (stopped) return;
    callback(null);
    handle = requestAnimationFrame(tick);
  };
  handle = requestAnimationFrame(tick);
  return () => {
    stopped = true;
    cancelAnimationFrame(handle);
  };
}

/** Wall-clock now in ms, on the same clock as the server's received_ms (Date.now with sub-ms precision). */
export function wallNowMs() {
  return performance.timeOrigin + performance.now();
}
