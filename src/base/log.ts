/**
 * Logging with a rate limit for paths the guest can trigger.
 *
 * DEVNOTE: a guest can hit a logging call millions of times a second (an unmapped port in a
 * loop). `ratelimited()` lets at most `burst` messages per key through in each `periodMs`
 * window and counts the rest, so the host log stays readable and the worker stays fast. Use
 * `log.*` only for paths the guest cannot trigger (set-up, management).
 */
export type Level = 'debug' | 'info' | 'warn' | 'error';
export type Sink = (level: Level, component: string, msg: string) => void;

const levels: Record<Level, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function envLevel(): Level {
  const v = typeof process !== 'undefined' ? process.env['TSHV_LOG'] : undefined;
  return v === 'debug' || v === 'info' || v === 'warn' || v === 'error' ? v : 'warn';
}

let threshold = levels[envLevel()];
let sink: Sink = (level, component, msg) => {
  process.stderr.write(`tshv ${level} [${component}] ${msg}\n`);
};

export function setLogSink(s: Sink): void { sink = s; }
export function setLogLevel(l: Level): void { threshold = levels[l]; }

export class Logger {
  constructor(readonly component: string) {}
  debug(msg: string): void { if (threshold <= levels.debug) sink('debug', this.component, msg); }
  info(msg: string): void { if (threshold <= levels.info) sink('info', this.component, msg); }
  warn(msg: string): void { if (threshold <= levels.warn) sink('warn', this.component, msg); }
  error(msg: string): void { if (threshold <= levels.error) sink('error', this.component, msg); }
}

/** A rate limiter for guest-triggerable log lines, one per call site (or per key). */
export class RateLimitedLog {
  #windowStart = 0;
  #inWindow = 0;
  /** Messages suppressed since the process started. */
  suppressed = 0;
  /** Messages emitted since the process started. */
  emitted = 0;

  constructor(readonly logger: Logger, readonly burst = 10, readonly periodMs = 5000, private readonly now: () => number = Date.now) {}

  warn(msg: () => string): void {
    const t = this.now();
    if (t - this.#windowStart >= this.periodMs) {
      if (this.#inWindow > this.burst) this.logger.warn(`(${this.#inWindow - this.burst} similar messages suppressed)`);
      this.#windowStart = t;
      this.#inWindow = 0;
    }
    this.#inWindow++;
    if (this.#inWindow <= this.burst) {
      this.emitted++;
      this.logger.warn(msg());
    } else {
      this.suppressed++;
    }
  }
}
