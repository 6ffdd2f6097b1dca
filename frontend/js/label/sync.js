// The sync state: sending the outbox's operations to the API (with their Idempotency-Key),
// the "All labels saved" / "Sending…" / "Offline" badge, the offline banner, and what the
// page does when the server goes away or comes back.
//
// Owns #sync-state, body[data-pending] and `ackedDelta` (labels the server has taken that the
// last metrics don't show yet; progress.js reads it).

import * as api from "../api.js";
import { $, el, fmtInt, hideBanner, plural, showBanner } from "../ui.js";
import { REFILL_BELOW } from "./prefetch.js";

export const sync = {
  async deliver(op) {
    const headers = { "Idempotency-Key": op.id };
    if (op.kind === "label") {
      await api.post(`/items/${op.item_id}/labels`, { label: op.label, ms_spent: op.ms_spent }, { headers });
      this.ackedDelta += 1;
    } else if (op.kind === "skip") {
      await api.post(`/items/${op.item_id}/skip`, undefined, { headers });
    } else if (op.kind === "unskip") {
      await api.del(`/items/${op.item_id}/skip`, { headers });
    } else if (op.kind === "undo") {
      try {
        await api.del(`/items/${op.item_id}/labels/mine`, { headers });
        this.ackedDelta -= 1;
      } catch (error) {
        // 404: nothing to undo any more (a retry of an undo whose reply was lost).
        if (!(error instanceof api.ApiError && error.status === 404)) throw error;
      }
    }
  },

  onConnection(online) {
    if (online) {
      hideBanner();
      this.outbox.flushNow();
      // Images that failed while the server was away: fetch them again now.
      for (const entry of this.buffer) if (entry.error) entry.ready = entry.load();
      if (this.current && !this.current.loaded) this.show(this.current);
      if (this.buffer.length < REFILL_BELOW) this.refill();
    } else {
      this.renderOffline();
    }
    this.renderSync();
    if (!this.current) this.renderEmpty();
  },

  renderOffline() {
    const waiting = this.outbox.size;
    showBanner([
      el("strong", {}, "Can't reach the nextlabel server. "),
      waiting
        ? `${plural(waiting, "change")} saved in this browser will be sent when it is back. Keep labelling.`
        : "Keep labelling: your labels are saved in this browser and sent when it is back.",
    ]);
  },

  renderSync() {
    const badge = $("#sync-state");
    const waiting = this.outbox.size;
    document.body.dataset.pending = String(waiting);
    badge.hidden = false;
    if (!api.connection.online) {
      badge.dataset.state = "offline";
      badge.textContent = waiting ? `Offline · ${fmtInt(waiting)} waiting` : "Offline";
      this.renderOffline();
    } else if (waiting) {
      badge.dataset.state = "pending";
      badge.textContent = `Sending ${fmtInt(waiting)}…`;
    } else {
      badge.dataset.state = "ok";
      badge.textContent = "All labels saved";
    }
    this.renderProgress();
  },
};
