// The two count panels beside the curve: labels per class (bars) and labels per annotator
// (a table, busiest first).

import { $, el, fmtInt } from "../ui.js";

export function renderClassCounts(project, metrics) {
  const counts = metrics.label_counts;
  const max = Math.max(1, ...Object.values(counts));
  // The project's classes in their order, then any label no longer among them.
  const names = [
    ...project.classes,
    ...Object.keys(counts).filter((name) => !project.classes.includes(name)),
  ];
  $("#class-counts").replaceChildren(
    ...names.map((name) => {
      const count = counts[name] || 0;
      return el(
        "li",
        {},
        el("span", {}, name),
        el(
          "span",
          { class: "bar", role: "presentation" },
          el("span", { style: { width: `${(100 * count) / max}%` } }),
        ),
        el("span", { class: "count" }, fmtInt(count)),
      );
    }),
  );
}

export function renderAnnotators(metrics) {
  const rows = [...metrics.annotators].sort((a, b) => b.labels - a.labels);
  $("#annotators-empty").hidden = rows.length > 0;
  $("#annotator-counts").hidden = rows.length === 0;
  $("#annotator-counts tbody").replaceChildren(
    ...rows.map((row) =>
      el(
        "tr",
        {},
        el("td", {}, row.name),
        el("td", { class: "num" }, fmtInt(row.labels)),
        el("td", { class: "num" }, fmtInt(row.labels_today)),
      ),
    ),
  );
}
