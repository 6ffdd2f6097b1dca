// What the annotator does: label, skip and undo. Each moves the page on first and then puts
// the operation in the outbox; undo takes back the newest one (dropped if not sent yet,
// otherwise followed by its undo) and brings its image back on stage. Also the undo history
// and the last-action line under the buttons.
//
// Owns `history`, `doneIds` and #last-action.

import { $ } from "../ui.js";

const HISTORY_LIMIT = 20; // labelled items kept, with their images, for undo

export const actions = {
  label(index) {
    const entry = this.current;
    if (!entry || entry.shownAt === null || entry.shownAt === undefined) return; // not on screen yet
    const label = this.classes[index];
    const msSpent = Math.min(Math.round(performance.now() - entry.shownAt), 86_400_000);
    this.flash(index);
    this.advance(); // first: the next image must not wait for anything below
    this.confirm(label);
    const op = this.outbox.enqueue({ kind: "label", item_id: entry.id, label, ms_spent: msSpent });
    this.remember({ entry, kind: "label", opId: op.id, label });
    this.lastAction(`Labelled item ${entry.id} as “${label}”`);
  },

  skip() {
    const entry = this.current;
    if (!entry) return;
    this.advance();
    const op = this.outbox.enqueue({ kind: "skip", item_id: entry.id });
    this.remember({ entry, kind: "skip", opId: op.id });
    this.confirm("Skipped", "skip");
    this.lastAction(`Skipped item ${entry.id}`);
  },

  undo() {
    const last = this.history.pop();
    if (!last) {
      this.lastAction("Nothing to undo");
      return;
    }
    // Not sent yet: just drop it. Sent (or being sent): queue its undo behind it.
    const cancelled = this.outbox.cancel(last.opId);
    if (!cancelled)
      this.outbox.enqueue({ kind: last.kind === "label" ? "undo" : "unskip", item_id: last.entry.id });
    this.doneIds.delete(last.entry.id);
    if (this.current) this.buffer.unshift(this.current);
    this.show(last.entry);
    this.lastAction(
      last.kind === "label"
        ? `Undid “${last.label}” on item ${last.entry.id}`
        : "Back to the skipped image",
    );
    this.renderProgress();
  },

  remember(action) {
    this.doneIds.add(action.entry.id);
    this.history.push(action);
    while (this.history.length > HISTORY_LIMIT) this.history.shift().entry.release();
  },

  lastAction(text) {
    $("#last-action").textContent = text;
  },
};
