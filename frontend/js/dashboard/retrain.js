// The "Retrain now" button: it starts a round, and while a round is queued or running it is
// disabled and says which round.

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
      toast(`Round ${round.id} queued: the worker will train a new model.`, "success");
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

export function renderRetrain(queue) {
  const retrain = $("#retrain");
  const active = roundActive(queue);
  retrain.disabled = active;
  retrain.textContent = active
    ? `Round ${queue.active_round_id} ${queue.active_round_status}…`
    : "Retrain now";
}
