// The four summary tiles: images, labelled, current model and next retrain.

import { $, fmtInt, fmtNum, fmtPct, plural } from "../ui.js";
import { roundActive } from "./retrain.js";

export function renderTiles(metrics) {
  const totals = metrics.totals;
  $("#tile-items").textContent = fmtInt(totals.items);
  $("#tile-items-sub").textContent = `${fmtInt(totals.pool)} pool · ${fmtInt(totals.validation)} validation`;
  $("#tile-labelled").textContent = fmtInt(totals.labelled);
  $("#tile-labelled-sub").textContent = totals.pool
    ? `${fmtPct(totals.labelled / totals.pool)} of the pool`
    : "no pool images yet";
  renderModelTile(metrics.learning_curve.at(-1));
  renderRetrainTile(metrics.queue);
}

function renderModelTile(last) {
  if (last) {
    $("#tile-model").textContent = last.accuracy === null ? `Round ${last.round_id}` : fmtPct(last.accuracy);
    $("#tile-model-sub").textContent =
      last.accuracy === null
        ? "no validation accuracy"
        : `round ${last.round_id} · NLL ${fmtNum(last.nll)} · ${plural(last.labels_used, "label")}`;
  } else {
    $("#tile-model").textContent = "None yet";
    $("#tile-model-sub").textContent = "random order until the first round";
  }
}

function renderRetrainTile(queue) {
  if (roundActive(queue)) {
    $("#tile-retrain").textContent = queue.active_round_status === "running" ? "Training" : "Queued";
    $("#tile-retrain-sub").textContent = queue.active_round_waiting_for_broker
      ? `round ${queue.active_round_id} · waiting for the task broker`
      : `round ${queue.active_round_id}`;
  } else if (queue.pool_exhausted) {
    $("#tile-retrain").textContent = "Pool done";
    $("#tile-retrain-sub").textContent = "every pool image is labelled";
  } else {
    $("#tile-retrain").textContent = plural(queue.labels_until_retrain, "label");
    $("#tile-retrain-sub").textContent =
      `${fmtInt(queue.labels_since_round)} since the last round · every ${queue.retrain_every}`;
  }
}
