// The current-queue panel: the first thumbnails of the latest round's queue, in rank order,
// each marked once it has been labelled. The thumbnails are fetched with the Bearer header
// and shown through object URLs, which are revoked when a new round replaces the grid.

import * as api from "../api.js";
import { $, el, fmtInt, fmtNum, plural, strategyName } from "../ui.js";

const QUEUE_SHOWN = 48; // thumbnails in the queue grid
const THUMB_CONCURRENCY = 4;

/** Run async jobs with at most `limit` in flight. */
async function pool(jobs, limit) {
  const queue = [...jobs];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await queue.shift()();
  });
  await Promise.all(workers);
}

export class QueuePanel {
  roundId = null;
  figures = new Map(); // item id → <figure>
  thumbUrls = [];

  /** `queue` is the metrics' queue summary; the entries come from the round itself. */
  async render(queue) {
    const roundId = queue.round_id;
    const note = $("#queue-note");
    $("#queue-empty").hidden = roundId !== null;
    if (roundId === null) {
      note.textContent = "";
      return;
    }
    const detail = await api.get(`/rounds/${roundId}`);
    const entries = [...detail.queue].sort((a, b) => a.rank - b.rank);
    note.textContent = `Round ${roundId} · ${strategyName(detail.strategy)} · ${plural(entries.length, "item")} · ${fmtInt(queue.queue_remaining)} left to label`;
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
    for (const url of this.thumbUrls) URL.revokeObjectURL(url);
    this.thumbUrls = [];
    this.figures.clear();
    const jobs = [];
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
          el("span", { class: "score", title: `${strategyName(entry.strategy)} score` }, fmtNum(entry.score)),
        ),
      );
      this.figures.set(entry.item_id, figure);
      jobs.push(() => this.loadThumb(img, entry.image_url || `/items/${entry.item_id}/image`));
      return figure;
    });
    $("#queue").replaceChildren(...figures);
    pool(jobs, THUMB_CONCURRENCY);
  }

  async loadThumb(img, path) {
    try {
      const blob = await api.fetchBlob(path);
      const url = URL.createObjectURL(blob);
      this.thumbUrls.push(url);
      img.src = url;
      await img.decode();
      if (img.naturalWidth < 104) img.classList.add("pixelated");
    } catch {
      img.alt = "image unavailable";
    }
  }
}
