// The rounds panel: one row per round, newest first, with its number in the project, status,
// the network it trained (and the embedding space its features came from), scores and a bar
// of how long each phase took (the phase legend above the table is drawn here too). On a
// narrow screen the table scrolls sideways inside its panel, and says so.

import {
  $,
  el,
  fmtInt,
  fmtNum,
  fmtPct,
  fmtSeconds,
  fmtTime,
  networkName,
  phases,
  strategyName,
} from "../ui.js";
import { shortSpace } from "./spaces.js";

// One colour per phase, in the order the catalog lists them (load, embed, train, ...).
const PHASE_COLOURS = ["#9fb3e6", "#5fae5a", "#2b57d0", "#7b4bc4", "#0f8b8d", "#d9822b", "#7a869a"];
// The cells of a row: the error row under a failed round spans all but the first.
const COLUMNS = 10;

/** [name, colour] of each phase the server's catalog lists. */
const phaseColours = () =>
  phases().map(({ name }, index) => [name, PHASE_COLOURS[index % PHASE_COLOURS.length]]);

export function renderPhaseLegend() {
  $("#phase-legend").replaceChildren(
    ...phaseColours().map(([name, color]) => el("span", {}, el("i", { style: { background: color } }), name)),
  );
}

export function renderRounds(project, rounds) {
  const sorted = [...rounds].sort((a, b) => b.id - a.id);
  $("#rounds-every").textContent = project.retrain_every;
  $("#rounds-empty").hidden = sorted.length > 0;
  $("#rounds").hidden = sorted.length === 0;
  const rows = [];
  for (const round of sorted) {
    rows.push(roundRow(round));
    if (round.status === "failed" && round.error) {
      rows.push(
        el("tr", { class: "error-row" }, el("td", {}), el("td", { colspan: COLUMNS - 1 }, round.error)),
      );
    }
  }
  $("#rounds tbody").replaceChildren(...rows);
  markOverflow();
}

let watched = false;

/** Mark the table's box when it is wider than the screen: a shadow and a hint say so. */
function markOverflow() {
  const wrap = $("#rounds-wrap");
  const overflowing = wrap.scrollWidth > wrap.clientWidth + 1;
  wrap.toggleAttribute("data-overflowing", overflowing);
  $("#rounds-hint").hidden = !overflowing;
  if (!watched) {
    watched = true;
    new ResizeObserver(markOverflow).observe(wrap);
  }
}

function roundRow(round) {
  const metrics = round.metrics || {};
  return el(
    "tr",
    { dataset: { round: round.id, status: round.status } },
    el("td", { title: `round id ${round.id}` }, `#${round.number}`),
    el("td", {}, el("span", { class: "badge", dataset: { status: round.status } }, round.status)),
    el("td", {}, round.trigger),
    el("td", {}, strategyName(round.strategy)),
    networkCell(metrics),
    el("td", { class: "num" }, fmtInt(round.labels_used)),
    el("td", { class: "num" }, typeof metrics.accuracy === "number" ? fmtPct(metrics.accuracy) : "–"),
    el("td", { class: "num" }, typeof metrics.nll === "number" ? fmtNum(metrics.nll) : "–"),
    el("td", {}, phaseCell(round.timings || {})),
    finishedCell(round),
  );
}

/**
 * The network the round trained and, on frozen features, a short form of their space (the
 * model left out where the network names it); the full key and how many images the round
 * embedded itself are in the title, which keeps the column narrow.
 */
function networkCell(metrics) {
  if (!metrics.network) return el("td", { class: "muted" }, "–");
  const parts = [el("span", {}, networkName(metrics.network))];
  if (metrics.embedding_space) {
    const embedded =
      typeof metrics.embedded_now === "number"
        ? `\n${fmtInt(metrics.embedded_now)} embedded by this round`
        : "";
    parts.push(
      el(
        "span",
        { class: "space muted", title: `${metrics.embedding_space}${embedded}` },
        `space ${shortSpace(metrics.embedding_space, { unless: metrics.network })}`,
      ),
    );
  }
  return el("td", { class: "network" }, parts);
}

/** When the round finished; a round still queued or running has no such time yet. */
function finishedCell(round) {
  if (round.finished_at) return el("td", { class: "muted" }, fmtTime(round.finished_at));
  const since = round.started_at
    ? `started ${fmtTime(round.started_at)}`
    : `queued ${fmtTime(round.created_at)}`;
  return el("td", { class: "muted", title: since }, "–");
}

function phaseCell(timings) {
  const shown = phaseColours().filter(([name]) => typeof timings[name] === "number");
  if (!shown.length) return el("span", { class: "muted" }, "–");
  const sum = shown.reduce((total, [name]) => total + timings[name], 0) || 1;
  const total = typeof timings.total === "number" ? timings.total : sum;
  const title = shown.map(([name]) => `${name} ${fmtSeconds(timings[name])}`).join(" · ");
  return el(
    "div",
    { class: "phases", title },
    el(
      "div",
      { class: "phase-bar", role: "img", "aria-label": title },
      shown.map(([name, color]) =>
        el("span", { style: { width: `${(100 * timings[name]) / sum}%`, background: color } }),
      ),
    ),
    el("span", {}, fmtSeconds(total)),
  );
}
