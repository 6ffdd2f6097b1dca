// The four summary tiles: images, labelled, current model and next retrain. The model tile
// names the round whose queue is being served (metrics.queue.round_number), the same round
// the queue panel shows, so the two never disagree. The images tile links to the
// near-duplicates panel when some are flagged.

import { $, el, fmtInt, fmtNum, fmtPct, plural } from "../ui.js";
import { roundActive } from "./retrain.js";

export function renderTiles(metrics) {
  const totals = metrics.totals;
  $("#tile-items").textContent = fmtInt(totals.items);
  $("#tile-items-sub").replaceChildren(
    `${fmtInt(totals.pool)} pool · ${fmtInt(totals.validation)} validation`,
    ...duplicatesLink(totals.near_duplicates),
  );
  $("#tile-labelled").textContent = fmtInt(totals.labelled);
  $("#tile-labelled-sub").textContent = totals.pool
    ? `${fmtPct(totals.labelled / totals.pool)} of the pool`
    : "no pool images yet";
  const queue = metrics.queue;
  renderModelTile(
    metrics.learning_curve.find((point) => point.round_id === queue.round_id),
    queue,
  );
  renderRetrainTile(metrics);
}

/** " · 3 near duplicates", linking to their panel; nothing when there are none. */
function duplicatesLink(count) {
  if (!count) return [];
  return [
    " · ",
    el("a", { href: "#duplicates-title", id: "tile-duplicates" }, plural(count, "near duplicate")),
  ];
}

function renderModelTile(current, queue) {
  if (current) {
    const round = `round ${current.round_number}`;
    $("#tile-model").textContent = current.accuracy === null ? `Round ${current.round_number}` : fmtPct(current.accuracy);
    $("#tile-model-sub").textContent =
      current.accuracy === null
        ? `${round} · no validation accuracy`
        : `${round} · NLL ${fmtNum(current.nll)} · ${plural(current.labels_used, "label")}`;
  } else if (roundActive(queue)) {
    $("#tile-model").textContent = queue.active_round_status === "running" ? "Training" : "Queued";
    $("#tile-model-sub").textContent = `the first model, round ${queue.active_round_number}; random order until then`;
  } else {
    $("#tile-model").textContent = "None yet";
    $("#tile-model-sub").textContent = "random order until the first round";
  }
}

function renderRetrainTile(metrics) {
  const queue = metrics.queue;
  if (metrics.totals.pool === 0) {
    $("#tile-retrain").textContent = "No images";
    $("#tile-retrain-sub").textContent = "add images to the pool to start";
  } else if (roundActive(queue)) {
    $("#tile-retrain").textContent = queue.active_round_status === "running" ? "Training" : "Queued";
    $("#tile-retrain-sub").textContent = queue.active_round_waiting_for_broker
      ? `round ${queue.active_round_number} · waiting for the task broker`
      : `round ${queue.active_round_number}`;
  } else if (queue.pool_exhausted) {
    $("#tile-retrain").textContent = "Pool done";
    $("#tile-retrain-sub").textContent = "every pool image is labelled";
  } else {
    $("#tile-retrain").textContent = plural(queue.labels_until_retrain, "label");
    $("#tile-retrain-sub").textContent =
      `${fmtInt(queue.labels_since_round)} since the last round · every ${queue.retrain_every}`;
  }
}
