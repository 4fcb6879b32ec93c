// Draws a result's boxes over the video: one colour per class, a label with the score on each box.

/** A stable, well-spread colour for a class id (golden-angle hues). */
export function classColour(classId) {
  const hue = Math.round((classId * 137.508) % 360);
  return `hsl(${hue} 90% 50%)`;
}

/**
 * Where a video of `videoW` x `videoH` is shown inside a `boxW` x `boxH` element with
 * `object-fit: contain`: the picture's top-left corner and displayed size, in element pixels.
 */
export function containRect(videoW, videoH, boxW, boxH) {
  const scale = Math.min(boxW / videoW, boxH / videoH);
  const width = videoW * scale;
  const height = videoH * scale;
  return { x: (boxW - width) / 2, y: (boxH - height) / 2, width, height };
}

/**
 * A box `[x1, y1, x2, y2]` in the pixels of a `frameW` x `frameH` sampled frame, mapped onto the
 * displayed picture `rect`. The sampled frame may be smaller than the video shown (the sender can
 * change resolution), so each axis scales from the frame's own size.
 */
export function mapBox(box, frameW, frameH, rect) {
  const sx = rect.width / frameW;
  const sy = rect.height / frameH;
  const [x1, y1, x2, y2] = box;
  return [rect.x + x1 * sx, rect.y + y1 * sy, rect.x + x2 * sx, rect.y + y2 * sy];
}

/** Paint `image` (ImageBitmap, VideoFrame, ...) into `canvas` the way object-fit: contain shows a video. */
export function paintContained(canvas, image, width, height) {
  const ctx = canvas.getContext("2d");
  const ratio = window.devicePixelRatio || 1;
  const w = Math.round(canvas.clientWidth * ratio);
  const h = Math.round(canvas.clientHeight * ratio);
  if (canvas.width !== w || canvas.height !== h) {
    canvas.width = w;
    canvas.height = h;
  }
  const rect = containRect(width, height, w, h);
  ctx.clearRect(0, 0, w, h);
  ctx.drawImage(image, rect.x, rect.y, rect.width, rect.height);
}

export class Overlay {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
  }

  /** Match the canvas backing store to its displayed size (sharp on high-DPI screens). */
  fit() {
    const ratio = window.devicePixelRatio || 1;
    const width = Math.round(this.canvas.clientWidth * ratio);
    const height = Math.round(this.canvas.clientHeight * ratio);
    if (this.canvas.width !== width || this.canvas.height !== height) {
      this.canvas.width = width;
      this.canvas.height = height;
    }
    return ratio;
  }

  clear() {
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  /**
   * Draw `result`'s detections over a video whose current picture is `videoW` x `videoH` (0: use the
   * result's own size). Boxes are in the pixels of the sampled frame (result.width x result.height);
   * the canvas covers the video element, which shows the picture with object-fit: contain.
   */
  draw(result, videoW = 0, videoH = 0) {
    const ratio = this.fit();
    this.clear();
    if (!result || !result.width || !result.height) return 0;
    const rect = containRect(videoW || result.width, videoH || result.height, this.canvas.width, this.canvas.height);
    const ctx = this.ctx;
    const fontPx = Math.round(13 * ratio);
    ctx.font = `600 ${fontPx}px system-ui, sans-serif`;
    ctx.textBaseline = "top";
    ctx.lineWidth = Math.max(2, Math.round(2 * ratio));
    for (const det of result.detections) {
      const [x1, y1, x2, y2] = mapBox(det.box, result.width, result.height, rect);
      const colour = classColour(det.class_id);
      ctx.strokeStyle = colour;
      ctx.strokeRect(x1, y1, x2 - x1, y2 - y1);
      const text = `${det.label} ${Math.round(det.score * 100)}%`;
      const pad = Math.round(3 * ratio);
      const textW = ctx.measureText(text).width + 2 * pad;
      const textH = fontPx + 2 * pad;
      // The label sits above the box (inside it at the top edge) and never runs off the right edge.
      const labelY = y1 - textH >= 0 ? y1 - textH : y1;
      const labelX = Math.max(0, Math.min(x1, this.canvas.width - textW));
      ctx.fillStyle = colour;
      ctx.fillRect(labelX, labelY, textW, textH);
      ctx.fillStyle = "#000";
      ctx.fillText(text, labelX + pad, labelY + pad);
    }
    return result.detections.length;
  }
}
