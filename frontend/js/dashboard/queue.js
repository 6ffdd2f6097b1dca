// The current-queue panel: the first thumbnails of the latest round's queue, in rank order,
// each marked once it has been labelled. The thumbnails (thumbs.js) are revoked when a new
// round replaces the grid.

import * as api from "../api.js";
import { $, el, fmtInt, fmtNum, plural, strategyName } from "../ui.js";
import { Thumbs } from "./thumbs.js";

const QUEUE_SHOWN = 48; // thumbnails in the queue grid

/** A score in at most 7 characters, so it fits its tile: 0.42, 17, 1.2e5, 2.5e-7. */
function compactScore(score) {
  const size = Math.abs(score);
  if (size !== 0 && (size >= 1000 || size < 0.01)) return score.toExponential(1).replace("e+", "e");
  return fmtNum(score, 2);
}

/** What the panel says before the first model has queued anything. */
function emptyText(queue) {
  const first = "Until the first model is trained, images are served in random order.";
  if (queue.active_round_id !== null && ["queued", "running"].includes(queue.active_round_status)) {
    return `Round ${queue.active_round_number} is ${queue.active_round_status}: when it finishes, its model fills this queue. ${first}`;
  }
  return `The queue is filled by the first completed round. ${first}`;
}

export class QueuePanel {
  roundId = null;
  figures = new Map(); // item id → <figure>
  thumbs = new Thumbs();

  /** `queue` is the metrics' queue summary; the entries come from the round itself. */
  async render(queue) {
    const roundId = queue.round_id;
    const note = $("#queue-note");
    $("#queue-empty").hidden = roundId !== null;
    if (roundId === null) {
      note.textContent = "";
      $("#queue-empty").textContent = emptyText(queue);
      return;
    }
    const detail = await api.get(`/rounds/${roundId}`);
    const entries = [...detail.queue].sort((a, b) => a.rank - b.rank);
    note.textContent = `Round ${queue.round_number} · ${strategyName(detail.strategy)} · ${plural(entries.length, "item")} · ${fmtInt(queue.queue_remaining)} left to label`;
    if (roundId !== this.roundId) {
      this.roundId = roundId;
      this.build(entries.slice(0, QUEUE_SHOWN));
    }
    for (const entry of entries) {
      const figure = this.figures.get(entry.item_id);
      if (figure) figure.toggleAttribute("data-labelled", entry.labelled);
    }
  }

  build(entries) {
    this.thumbs.clear();
    this.figures.clear();
    const thumbs = [];
    const figures = entries.map((entry) => {
      const img = el("img", {
        alt: entry.filename ? `Queued image ${entry.filename}` : `Queued item ${entry.item_id}`,
      });
      const figure = el(
        "figure",
        { dataset: { item: entry.item_id }, title: entry.filename || `item ${entry.item_id}` },
        el("div", { class: "thumb" }, img),
        el(
          "figcaption",
          {},
          el("span", { class: "muted" }, `#${entry.rank + 1}`),
          el(
            "span",
            { class: "score", title: `${strategyName(entry.strategy)} score ${entry.score}` },
            compactScore(entry.score),
          ),
        ),
      );
      this.figures.set(entry.item_id, figure);
      thumbs.push([img, entry.image_url || `/items/${entry.item_id}/image`]);
      return figure;
    });
    $("#queue").replaceChildren(...figures);
    this.thumbs.load(thumbs);
  }
}
