// The progress line: labels today, labelled / pool, and how far the next model is, from
// GET /projects/{pid}/metrics every few seconds, corrected for what this page has done that
// the server's figures can't show yet. Each poll also hands the queue to model.js, which
// notices a new round.
//
// Owns #stat-today, #stat-labelled, #labelled-meter, #retrain, `metrics`, `metricsAllowed`
// and `pollTimer`.

import * as api from "../api.js";
import { $, fmtInt, plural } from "../ui.js";

export const METRICS_EVERY_MS = 7000;

export const progress = {
  async pollMetrics() {
    if (!this.metricsAllowed) return;
    try {
      const ackedBefore = this.ackedDelta;
      const metrics = await api.get(`/projects/${this.project.id}/metrics`);
      this.ackedDelta -= ackedBefore; // the fresh numbers include what was acknowledged before
      this.metrics = metrics;
      this.checkNewModel(metrics.queue);
      this.renderProgress();
    } catch (error) {
      if (error instanceof api.ApiError && error.status === 403) this.metricsAllowed = false;
    }
  },

  pollSoon() {
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => this.pollMetrics(), 2000);
  },

  /** Label count change made here that the last metrics can't show yet. */
  localDelta() {
    let delta = this.ackedDelta;
    for (const op of this.outbox.pending()) {
      if (op.kind === "label") delta += 1;
      else if (op.kind === "undo") delta -= 1;
    }
    return delta;
  },

  renderProgress() {
    const metrics = this.metrics;
    if (!metrics) return;
    const delta = this.localDelta();
    const mine = metrics.annotators.find((row) => row.annotator_id === this.me.id);
    $("#stat-today").textContent = fmtInt(Math.max(0, (mine ? mine.labels_today : 0) + delta));
    const labelled = Math.max(0, metrics.totals.labelled + delta);
    const pool = metrics.totals.pool;
    $("#stat-labelled").textContent = `${fmtInt(Math.min(labelled, pool))} / ${fmtInt(pool)}`;
    $("#labelled-meter").style.width = pool ? `${Math.min(100, (100 * labelled) / pool)}%` : "0";
    const queue = metrics.queue;
    const retrain = $("#retrain");
    if (queue.active_round_id !== null && ["queued", "running"].includes(queue.active_round_status)) {
      retrain.textContent = `Round ${queue.active_round_id} is ${queue.active_round_status}: a new model is on its way.`;
    } else if (queue.pool_exhausted) {
      retrain.textContent = "Every image in the pool is labelled.";
    } else {
      const left = Math.max(0, queue.labels_until_retrain - Math.max(0, delta));
      retrain.textContent = left
        ? `${plural(left, "label")} until the next model.`
        : "Enough new labels: the next model is due.";
    }
  },
};
