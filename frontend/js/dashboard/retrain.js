// The "Retrain now" button: it starts a round, and while a round is queued or running it is
// disabled and says which round. Until the project has a label there is nothing to train on,
// and it is disabled with the reason in its title.

import * as api from "../api.js";
import { $, toast } from "../ui.js";

/** Whether the metrics' queue reports a round that is queued or running. */
export function roundActive(queue) {
  return queue.active_round_id !== null && ["queued", "running"].includes(queue.active_round_status);
}

export function bindRetrain(board) {
  $("#retrain").addEventListener("click", async (event) => {
    const button = event.currentTarget;
    button.disabled = true;
    try {
      const round = await api.post(`/projects/${board.pid}/rounds`);
      toast(`Round ${round.number} queued: the worker will train a new model.`, "success");
    } catch (error) {
      toast(
        error instanceof api.ApiError && error.status === 409
          ? `Not started: ${error.message}`
          : error.message,
        "error",
        6000,
      );
    }
    await board.refresh();
  });
}

/** Whether the project has a label to train on. */
export function hasLabels(metrics) {
  return Object.values(metrics.label_counts).some((count) => count > 0);
}

export function renderRetrain(metrics) {
  const retrain = $("#retrain");
  const queue = metrics.queue;
  const active = roundActive(queue);
  const labelled = hasLabels(metrics);
  retrain.disabled = active || !labelled;
  retrain.textContent = active
    ? `Round ${queue.active_round_number} ${queue.active_round_status}…`
    : "Retrain now";
  retrain.title = labelled ? "" : "Nothing to train on yet: label at least one image first.";
}
