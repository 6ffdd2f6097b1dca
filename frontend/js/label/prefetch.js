// The prefetch buffer: the next items from GET /projects/{pid}/next, each with its image
// fetched (with the Bearer header, as a Blob) and decoded ahead of display, kept full and in
// order (a new model's picks first); and the hand-backs: every leased item the page will not
// show is released at once with DELETE /items/{iid}/lease, the ones still on hand on `pagehide`.
//
// Owns the Labeller's `buffer`, `refilling`, `exhausted`, `refillTimer`, `releasing`,
// `handingBack` and `reorderFor` (a new model's round, set by model.js).

import * as api from "../api.js";
import { toast } from "../ui.js";

const BUFFER_TARGET = 6; // items held ready, images decoded
export const REFILL_BELOW = 3; // ask for more when fewer than this are ready
const MAX_NEXT = 50; // the most items one GET /next asks for
const EMPTY_RETRY_MS = 8000;
const REFILL_RETRY_MS = 3000;
// Leases last 10 minutes by default; an item buffered this long is handed back and re-fetched
// (which renews its lease) rather than labelled after someone else may have received it.
const BUFFER_MAX_AGE_MS = 5 * 60 * 1000;

/** One item from GET /next, with its image fetched and decoded ahead of display. */
class Entry {
  constructor(next) {
    this.next = next;
    this.id = next.item.id;
    this.fetchedAt = Date.now();
    this.img = new Image();
    // Not the file name: it may give the answer away (the project's show_filenames).
    this.img.alt = `Image to label, item ${next.item.id}`;
    this.img.draggable = false;
    this.img.decoding = "sync";
    if (Math.max(next.item.width, next.item.height) < 256) this.img.classList.add("pixelated");
    this.url = null;
    this.loaded = false;
    this.error = null;
    this.ready = this.load();
  }

  async load() {
    this.error = null;
    try {
      if (!this.url) {
        const blob = await api.fetchBlob(this.next.item.image_url);
        this.url = URL.createObjectURL(blob);
        this.img.src = this.url;
      }
      await this.img.decode();
      this.loaded = true;
    } catch (error) {
      this.error = error;
    }
    return this;
  }

  get stale() {
    return Date.now() - this.fetchedAt > BUFFER_MAX_AGE_MS;
  }

  release() {
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
    this.loaded = false;
  }
}

export const prefetch = {
  /** Items the server may still hand out but this page must not show again. */
  heldIds() {
    const held = this.outbox.pendingItemIds();
    if (this.current) held.add(this.current.id);
    return held;
  },

  async refill() {
    if (this.refilling) return;
    clearTimeout(this.refillTimer);
    const modelRound = this.reorderFor;
    const want = BUFFER_TARGET - this.buffer.length + (this.current ? 0 : 1);
    if (want <= 0 && modelRound === null) return;
    this.refilling = true;
    this.reorderFor = null;
    let retryIn = null;
    try {
      // Items handed back must be free before `next` runs, or it would re-serve them to us.
      await this.releasing;
      // The server re-serves the items already leased to this annotator first, so ask for
      // enough to get past those on this page or waiting in the outbox.
      const extra = modelRound === null ? want : BUFFER_TARGET;
      const n = Math.min(MAX_NEXT, this.heldIds().size + this.buffer.length + extra);
      const items = await api.get(`/projects/${this.project.id}/next?n=${n}`);
      const held = this.heldIds();
      const usable = items.filter(
        (next) =>
          !held.has(next.item.id) && !this.doneIds.has(next.item.id) && !this.handingBack.has(next.item.id),
      );
      const before = this.buffer.map((entry) => entry.id);
      if (modelRound !== null) {
        this.rebuildBuffer(usable, modelRound);
      } else {
        const buffered = new Set(before);
        const fresh = usable.filter((next) => !buffered.has(next.item.id));
        for (const next of fresh.slice(0, want)) this.buffer.push(new Entry(next));
        this.exhausted = fresh.length === 0;
      }
      this.handBackUnused([...before, ...items.map((next) => next.item.id)], held);
      if (this.exhausted) retryIn = EMPTY_RETRY_MS;
    } catch (error) {
      if (!api.isUnavailable(error)) toast(`Could not fetch the next images: ${error.message}`, "error");
      if (modelRound !== null) this.reorderFor ??= modelRound;
      retryIn = REFILL_RETRY_MS;
    } finally {
      this.refilling = false;
    }
    if (!this.current && this.buffer.length) this.advance();
    else if (!this.current) this.show(null);
    else if (this.reorderFor !== null && retryIn === null) this.refill();
    else if (!this.exhausted && retryIn === null && this.buffer.length < REFILL_BELOW) this.refill();
    if (retryIn !== null) this.refillTimer = setTimeout(() => this.refill(), retryIn);
  },

  /**
   * A new model: put its queue's picks first, by rank, and keep a full buffer of them. Items
   * already buffered keep their prefetched image but take the new round's facts (its
   * prediction); the ones pushed out are handed back (by the caller, `refill`).
   */
  rebuildBuffer(usable, roundId) {
    const byRank = (a, b) => (a.rank ?? Infinity) - (b.rank ?? Infinity);
    const picked = usable.filter((next) => next.round_id === roundId).sort(byRank);
    const others = usable.filter((next) => next.round_id !== roundId);
    const previous = new Map(this.buffer.map((entry) => [entry.id, entry]));
    this.buffer = [...picked, ...others].slice(0, BUFFER_TARGET).map((next) => {
      const entry = previous.get(next.item.id);
      if (!entry) return new Entry(next);
      previous.delete(next.item.id);
      entry.next = next;
      return entry;
    });
    for (const entry of previous.values()) entry.release();
    this.exhausted = this.buffer.length === 0;
  },

  /** Of the items `next` leased to us (`ids`), hand back those this page neither holds nor buffers. */
  handBackUnused(ids, held) {
    const kept = new Set(this.buffer.map((entry) => entry.id));
    this.handBack(ids.filter((id) => !held.has(id) && !kept.has(id)));
  },

  /**
   * Release this annotator's leases on items the page will not show, so `next` can serve them
   * to others now. Items with an operation in the outbox are left alone: a label or skip
   * releases the lease itself, an undo leases the item back on purpose.
   */
  handBack(ids) {
    const pending = this.outbox.pendingItemIds();
    const free = [...new Set(ids)].filter((id) => !pending.has(id));
    if (!free.length) return;
    // Best effort: a lease that is not handed back simply expires.
    const released = free.map((id) => {
      this.handingBack.add(id);
      return api
        .del(`/items/${id}/lease`)
        .catch(() => {})
        .finally(() => this.handingBack.delete(id));
    });
    this.releasing = Promise.all([this.releasing, ...released]);
  },

  /** The page is going away: hand back the item on stage and the buffered ones. */
  handBackOnExit() {
    const pending = this.outbox.pendingItemIds();
    const entries = this.current ? [this.current, ...this.buffer] : this.buffer;
    for (const { id } of entries) {
      if (!pending.has(id)) api.sendOnExit("DELETE", `/items/${id}/lease`);
    }
  },

  /** Back from the back/forward cache: the buffer's leases were handed back, so fetch anew. */
  restoreBuffer() {
    for (const entry of this.buffer) entry.release();
    this.buffer = [];
    this.refill();
  },

  advance() {
    let next = this.buffer.shift() || null;
    while (next && next.stale) {
      next.release();
      this.handBack([next.id]);
      next = this.buffer.shift() || null;
    }
    this.show(next);
    if (this.buffer.length < REFILL_BELOW) this.refill();
  },
};
