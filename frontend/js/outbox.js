// The outbox: labels, skips and their undos wait here until the server has acknowledged them.
//
// Every operation is written to localStorage before the page moves on, so a stopped server,
// a dropped connection or a closed tab loses nothing: the queue is sent in order, one at a
// time, with exponential backoff, as soon as the server answers again. Each operation has
// a client-generated id (sent as Idempotency-Key); a retry of a label whose reply was lost is
// harmless because the server answers it with the label the first attempt made, writing
// nothing. Skips, unskips and undos are idempotent by nature.
//
// Order matters (a label then its undo must reach the server in that order), so the queue is
// strictly FIFO. Tabs share the queue through localStorage: every change re-reads it first,
// and where the Web Locks API exists only one tab sends at a time.

import { ApiError, NetworkError, isUnavailable } from "./api.js";

const BASE_DELAY_MS = 1000;
const MAX_DELAY_MS = 8000;

/** Worth retrying: the server was unreachable, overloaded or failed, not the request. */
function isTransient(error) {
  return (
    isUnavailable(error) ||
    (error instanceof ApiError && (error.status >= 500 || [408, 429].includes(error.status)))
  );
}

export function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  bytes[6] = (bytes[6] & 0x0f) | 0x40; // RFC 4122 version 4
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((byte) => byte.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** A short, stable, non-reversible namespace for a token (FNV-1a), so users don't share queues. */
export function namespaceFor(token) {
  let hash = 0x811c9dc5;
  for (let index = 0; index < token.length; index += 1) {
    hash ^= token.charCodeAt(index);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, "0");
}

/**
 * Events: "change" (the queue or its state changed), "rejected" (detail: {op, error}: the
 * server refused an operation for good), "unauthorized" (sending paused until sign-in).
 */
export class Outbox extends EventTarget {
  /**
   * @param {string} namespace  separates the queues of different tokens
   * @param {(op) => Promise<void>} deliver  sends one operation; throws ApiError/NetworkError
   */
  constructor(namespace, deliver) {
    super();
    this.key = `nextlabel.outbox.v1.${namespace}`;
    this.inflightKey = `${this.key}.inflight`;
    this.deliver = deliver;
    this.attempt = 0;
    this.timer = null;
    this.running = false;
    this.paused = false;
    this.lastError = null;
    this.retryAt = null;
    window.addEventListener("storage", (event) => {
      if (event.key === this.key) this.changed();
    });
    window.addEventListener("online", () => this.flushNow());
  }

  read() {
    try {
      const ops = JSON.parse(localStorage.getItem(this.key) || "[]");
      return Array.isArray(ops) ? ops : [];
    } catch {
      return [];
    }
  }

  write(ops) {
    localStorage.setItem(this.key, JSON.stringify(ops));
    this.changed();
  }

  changed() {
    this.dispatchEvent(new Event("change"));
  }

  get size() {
    return this.read().length;
  }

  /** Operations still waiting, oldest first. */
  pending() {
    return this.read();
  }

  /** Item ids the server doesn't know about yet (so `next` may still hand them out). */
  pendingItemIds() {
    return new Set(this.read().map((op) => op.item_id));
  }

  pendingLabels() {
    return this.read().filter((op) => op.kind === "label").length;
  }

  /** Queue an operation ({kind: "label"|"skip"|"undo"|"unskip", item_id, ...}); returns it with its id. */
  enqueue(fields) {
    const op = { id: newId(), queued_at: new Date().toISOString(), ...fields };
    this.write([...this.read(), op]);
    this.flushSoon();
    return op;
  }

  /** Remove an operation that has not been sent yet; false if it is being sent or is gone. */
  cancel(id) {
    if (localStorage.getItem(this.inflightKey) === id) return false;
    const ops = this.read();
    const kept = ops.filter((op) => op.id !== id);
    if (kept.length === ops.length) return false;
    this.write(kept);
    return true;
  }

  /** Send now, skipping any backoff wait (the server just answered, or the browser is online). */
  flushNow() {
    this.paused = false;
    this.attempt = 0;
    this.flushSoon();
  }

  flushSoon(delay = 0) {
    if (this.running || this.paused) return;
    clearTimeout(this.timer);
    this.retryAt = delay ? Date.now() + delay : null;
    this.timer = setTimeout(() => this.flush(), delay);
  }

  async flush() {
    if (this.running || this.paused) return;
    this.running = true;
    let retry = false;
    try {
      retry = navigator.locks
        ? await navigator.locks.request(this.key, () => this.drain())
        : await this.drain();
    } finally {
      this.running = false;
      this.changed();
    }
    if (retry) this.scheduleRetry();
    else if (!this.paused && this.read().length) this.flushSoon(); // queued while finishing
  }

  /** Send queued operations in order; true when the server is unavailable and a retry is due. */
  async drain() {
    for (;;) {
      const [op] = this.read();
      if (!op) {
        this.lastError = null;
        return false;
      }
      localStorage.setItem(this.inflightKey, op.id);
      try {
        await this.deliver(op);
        this.settle(op);
        this.attempt = 0;
        this.lastError = null;
      } catch (error) {
        if (isTransient(error)) {
          this.lastError = error instanceof NetworkError ? "unreachable" : error.message;
          return true;
        }
        if (error instanceof ApiError && error.status === 401) {
          this.paused = true;
          this.dispatchEvent(new CustomEvent("unauthorized", { detail: { op, error } }));
          return false;
        }
        if (!(error instanceof ApiError)) throw error;
        // The server refused this one for good (e.g. 404 item deleted, 422 class renamed):
        // retrying cannot help and would block everything queued behind it.
        this.settle(op);
        this.dispatchEvent(new CustomEvent("rejected", { detail: { op, error } }));
      } finally {
        localStorage.removeItem(this.inflightKey);
      }
    }
  }

  settle(op) {
    this.write(this.read().filter((queued) => queued.id !== op.id));
  }

  scheduleRetry() {
    const delay = Math.min(BASE_DELAY_MS * 2 ** this.attempt, MAX_DELAY_MS);
    this.attempt += 1;
    // Jitter, so a room full of annotators doesn't hammer a recovering server in lockstep.
    this.flushSoon(Math.round(delay * (0.75 + Math.random() * 0.5)));
  }
}
