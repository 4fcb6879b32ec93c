// Exponential backoff with jitter, for reconnecting the WebSocket and rejoining a session.

export class Backoff {
  /** Delays grow from `initialMs` by `factor` up to `maxMs`; each has +-`jitter` (a fraction) of noise. */
  constructor({ initialMs = 500, maxMs = 10000, factor = 2, jitter = 0.2, random = Math.random } = {}) {
    Object.assign(this, { initialMs, maxMs, factor, jitter, random });
    this.attempt = 0;
  }

  /** The delay before the next try, in ms; each call makes the following one longer. */
  next() {
    const base = Math.min(this.maxMs, this.initialMs * this.factor ** this.attempt);
    this.attempt += 1;
    const noise = 1 + this.jitter * (2 * this.random() - 1);
    return Math.round(Math.min(this.maxMs, base * noise));
  }

  /** After a success: the next failure starts again from the initial delay. */
  reset() {
    this.attempt = 0;
  }
}
