// The embedding panel, for projects on frozen features (a pretrained or custom backbone, or
// imported vectors): how far embedding the images in the current space has got (done of
// total, as a bar), the rate and the time left while it runs, how many came from the store,
// and the error when it failed. It reads project.embedding, which the dashboard's polling
// refreshes; projects that learn from pixels have none and the panel stays hidden.

import { $, el, fmtInt, fmtNum, fmtPct, fmtSeconds } from "../ui.js";
import { shortSpace } from "./spaces.js";

// The badge colours of the round statuses (base.css) say the same thing here.
const BADGE = { embedding: "running", done: "done", failed: "failed" };

/** "about 40 s", "about 3 min", "about 2 h 5 min": a time left is an estimate. */
export function fmtTimeLeft(seconds) {
  if (seconds < 60) return `about ${Math.max(1, Math.round(seconds))} s`;
  const minutes = Math.round(seconds / 60);
  if (minutes < 60) return `about ${minutes} min`;
  const hours = Math.floor(minutes / 60);
  return `about ${hours} h${minutes % 60 ? ` ${minutes % 60} min` : ""}`;
}

export function renderEmbedding(project) {
  const progress = project.embedding;
  const panel = $("#embedding-panel");
  panel.hidden = !progress;
  if (!progress) return;
  panel.dataset.state = progress.state;
  const badge = $("#embedding-state");
  badge.dataset.status = BADGE[progress.state] || progress.state;
  badge.textContent = progress.state;
  const space = $("#embedding-space");
  space.textContent = `Space ${shortSpace(progress.space_key)}`;
  space.title = progress.space_key;
  renderBar(progress);
  $("#embedding-facts").replaceChildren(...facts(progress));
  const error = $("#embedding-error");
  error.hidden = !(progress.state === "failed" && progress.error);
  error.textContent = progress.error || "";
}

function renderBar(progress) {
  const share = progress.total ? progress.done / progress.total : 1;
  $("#embedding-done").textContent = `${fmtInt(progress.done)} of ${fmtInt(progress.total)} images`;
  $("#embedding-pct").textContent = fmtPct(share, 0);
  const meter = $("#embedding-meter");
  meter.setAttribute("aria-valuemax", String(progress.total));
  meter.setAttribute("aria-valuenow", String(progress.done));
  meter.firstElementChild.style.width = `${100 * share}%`;
}

/** <dt>/<dd> pairs: the rate and time left only mean something while it runs. */
function facts(progress) {
  const running = progress.state === "embedding";
  const rows = [
    ["Images/s", progress.images_per_second === null ? "–" : fmtNum(progress.images_per_second)],
    ["Time left", running && progress.seconds_left !== null ? fmtTimeLeft(progress.seconds_left) : "–"],
    ["Reused", fmtInt(progress.reused)],
    ["Embedded now", fmtInt(progress.embedded)],
  ];
  if (progress.failed) rows.push(["Unreadable", fmtInt(progress.failed)]);
  if (!running && progress.finished_at) {
    const took = (Date.parse(progress.finished_at) - Date.parse(progress.started_at)) / 1000;
    rows.push(["Took", fmtSeconds(Math.max(0, took))]);
  }
  return rows.map(([name, value]) =>
    el(
      "div",
      { dataset: { fact: name.toLowerCase().replace(/\W+/g, "-") } },
      el("dt", {}, name),
      el("dd", {}, value),
    ),
  );
}
