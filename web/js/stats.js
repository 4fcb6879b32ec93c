// The numbers of the live panel: result rate, end-to-end latency p50, drops and people in view.

/** The `q` quantile (0..1) of a list of numbers, interpolated between neighbours (NaN when empty). */
export function quantile(values, q) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (sorted.length - 1) * q;
  const low = Math.floor(pos);
  const high = Math.ceil(pos);
  return sorted[low] + (sorted[high] - sorted[low]) * (pos - low);
}

/** The median of a list of numbers (NaN for an empty list). */
export function median(values) {
  return quantile(values, 0.5);
}

export class LiveStats {
  /** `windowMs`: span of the rate; `latencySamples`: how many recent latencies the p50 covers. */
  constructor({ windowMs = 2000, latencySamples = 100 } = {}) {
    this.windowMs = windowMs;
    this.latencySamples = latencySamples;
    this.clear();
  }

  clear() {
    this.resultTimes = []; // wall-clock ms when each recent result was drawn
    this.latencies = []; // received-to-drawn latency of recent results (from the bridge receiving the frame), ms
    this.results = 0;
    this.people = 0;
    this.objects = 0;
    this.dropped = 0;
    this.dropsByReason = {};
    this.inferred = 0;
  }

  /** A result was drawn at wall-clock `nowMs`; `latencyMs` runs from the bridge receiving the frame (`received_ms`) to drawn. */
  addResult(result, latencyMs, nowMs) {
    this.results += 1;
    this.resultTimes.push(nowMs);
    this.latencies.push(latencyMs);
    if (this.latencies.length > this.latencySamples) this.latencies.shift();
    this.objects = result.detections.length;
    this.people = result.detections.filter((d) => d.label === "person").length;
    this.trim(nowMs);
  }

  /** The server's drop tally for this session (from a "stats" message). */
  setServerStats({ dropped = 0, by_reason: byReason = {}, inferred = 0 }) {
    this.dropped = dropped;
    this.dropsByReason = { ...byReason };
    this.inferred = inferred;
  }

  trim(nowMs) {
    const oldest = nowMs - this.windowMs;
    while (this.resultTimes.length && this.resultTimes[0] <= oldest) this.resultTimes.shift();
  }

  /** Results drawn per second over the last window. */
  rate(nowMs) {
    this.trim(nowMs);
    return (this.resultTimes.length * 1000) / this.windowMs;
  }

  latencyP50() {
    return median(this.latencies);
  }
}
