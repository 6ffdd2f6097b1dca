// The rounds panel: one row per round, newest first, with its status, scores and a bar of
// how long each phase took (the phase legend above the table is drawn here too).

import { $, el, fmtInt, fmtNum, fmtPct, fmtSeconds, fmtTime, strategyName } from "../ui.js";

const PHASES = [
  ["load", "#9fb3e6"],
  ["train", "#2b57d0"],
  ["evaluate", "#7b4bc4"],
  ["infer", "#0f8b8d"],
  ["select", "#d9822b"],
  ["write", "#7a869a"],
];

export function renderPhaseLegend() {
  $("#phase-legend").replaceChildren(
    ...PHASES.map(([name, color]) => el("span", {}, el("i", { style: { background: color } }), name)),
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
      rows.push(el("tr", { class: "error-row" }, el("td", {}), el("td", { colspan: 8 }, round.error)));
    }
  }
  $("#rounds tbody").replaceChildren(...rows);
}

function roundRow(round) {
  const metrics = round.metrics || {};
  return el(
    "tr",
    { dataset: { round: round.id, status: round.status } },
    el("td", {}, `#${round.id}`),
    el("td", {}, el("span", { class: "badge", dataset: { status: round.status } }, round.status)),
    el("td", {}, round.trigger),
    el("td", {}, strategyName(round.strategy)),
    el("td", { class: "num" }, fmtInt(round.labels_used)),
    el("td", { class: "num" }, typeof metrics.accuracy === "number" ? fmtPct(metrics.accuracy) : "–"),
    el("td", { class: "num" }, typeof metrics.nll === "number" ? fmtNum(metrics.nll) : "–"),
    el("td", {}, phaseCell(round.timings || {})),
    el("td", { class: "muted" }, fmtTime(round.finished_at || round.started_at || round.created_at)),
  );
}

function phaseCell(timings) {
  const phases = PHASES.filter(([name]) => typeof timings[name] === "number");
  if (!phases.length) return el("span", { class: "muted" }, "–");
  const sum = phases.reduce((total, [name]) => total + timings[name], 0) || 1;
  const total = typeof timings.total === "number" ? timings.total : sum;
  const title = phases.map(([name]) => `${name} ${fmtSeconds(timings[name])}`).join(" · ");
  return el(
    "div",
    { class: "phases", title },
    el(
      "div",
      { class: "phase-bar", role: "img", "aria-label": title },
      phases.map(([name, color]) =>
        el("span", { style: { width: `${(100 * timings[name]) / sum}%`, background: color } }),
      ),
    ),
    el("span", {}, fmtSeconds(total)),
  );
}
