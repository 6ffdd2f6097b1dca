// The learning-curve panel: validation accuracy and NLL against labels used, one point per
// completed round, drawn with uPlot and mirrored in a table for screen readers.

import uPlot from "../../vendor/uplot/uPlot.esm.js";
import { $, el, fmtInt, fmtNum, fmtPct } from "../ui.js";

const HEIGHT = 280;
const ACCURACY_COLOR = "#2b57d0";
const NLL_COLOR = "#c8651b";

export class LearningCurve {
  chart = null;

  render(metrics) {
    const points = [...metrics.learning_curve].sort(
      (a, b) => a.labels_used - b.labels_used || a.round_id - b.round_id,
    );
    $("#curve-note").textContent =
      metrics.validation.note || `${fmtInt(metrics.validation.with_known_label)} validation images`;
    renderTable(points);
    const box = $("#learning-curve");
    $("#curve-empty").hidden = points.length > 0;
    box.hidden = points.length === 0;
    if (!points.length) return;
    const data = [
      points.map((point) => point.labels_used),
      points.map((point) => (point.accuracy === null ? null : point.accuracy * 100)),
      points.map((point) => point.nll),
    ];
    if (this.chart) {
      this.chart.setData(data);
      return;
    }
    this.chart = new uPlot(chartOptions(box.clientWidth), data, box);
    new ResizeObserver(() => {
      if (box.clientWidth) this.chart.setSize({ width: box.clientWidth, height: HEIGHT });
    }).observe(box);
  }
}

function renderTable(points) {
  $("#curve-table tbody").replaceChildren(
    ...points.map((point) =>
      el(
        "tr",
        {},
        el("td", {}, point.round_number),
        el("td", {}, point.labels_used),
        el("td", {}, fmtPct(point.accuracy)),
        el("td", {}, fmtNum(point.nll)),
      ),
    ),
  );
}

function chartOptions(width) {
  const axis = {
    stroke: "#57606b",
    grid: { stroke: "#eceef1", width: 1 },
    ticks: { stroke: "#d9dde3", width: 1 },
  };
  const font = "12px system-ui, -apple-system, Segoe UI, Roboto, sans-serif";
  return {
    width: Math.max(width, 280),
    height: HEIGHT,
    cursor: { drag: { x: false, y: false } },
    legend: { live: false },
    scales: {
      x: { time: false },
      acc: { range: [0, 100] },
      nll: { range: (u, min, max) => [0, Math.max(0.5, (max ?? 1) * 1.15)] },
    },
    series: [
      { label: "Labels", value: (u, value) => (value === null ? "–" : fmtInt(value)) },
      {
        label: "Validation accuracy",
        scale: "acc",
        stroke: ACCURACY_COLOR,
        width: 2,
        points: { show: true, size: 7, fill: ACCURACY_COLOR },
        value: (u, value) => (value === null ? "–" : `${value.toFixed(1)}%`),
      },
      {
        label: "Validation NLL",
        scale: "nll",
        stroke: NLL_COLOR,
        width: 2,
        dash: [6, 4],
        points: { show: true, size: 7, fill: NLL_COLOR },
        value: (u, value) => (value === null ? "–" : value.toFixed(3)),
      },
    ],
    axes: [
      { ...axis, font, labelFont: font, label: "Labels used" },
      {
        ...axis,
        font,
        labelFont: font,
        scale: "acc",
        label: "Accuracy",
        values: (u, ticks) => ticks.map((tick) => `${tick}%`),
      },
      { ...axis, font, labelFont: font, scale: "nll", side: 1, label: "NLL", grid: { show: false } },
    ],
  };
}
