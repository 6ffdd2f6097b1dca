// The admin dashboard: how the project is learning, who is labelling, what the current round
// queued, and the controls (settings, retrain, export, upload, members, new project).
//
// Everything comes from the public REST API and is refreshed every few seconds, so a round
// finishing in the worker shows up without a reload.

import uPlot from "../vendor/uplot/uPlot.esm.js";
import * as api from "./api.js";
import * as session from "./session.js";
import {
  $,
  el,
  fmtInt,
  fmtNum,
  fmtPct,
  fmtSeconds,
  fmtTime,
  hideBanner,
  plural,
  showBanner,
  STRATEGY_LABELS,
  strategyName,
  toast,
} from "./ui.js";

const POLL_MS = 8000;
const QUEUE_SHOWN = 48; // thumbnails in the queue grid
const THUMB_CONCURRENCY = 4;
const UPLOAD_BATCH_FILES = 200;
const UPLOAD_BATCH_BYTES = 64 * 1024 * 1024;
const SKIPPED_SHOWN = 100;
const PHASES = [
  ["load", "#9fb3e6"],
  ["train", "#2b57d0"],
  ["evaluate", "#7b4bc4"],
  ["infer", "#0f8b8d"],
  ["select", "#d9822b"],
  ["write", "#7a869a"],
];
const ACCURACY_COLOR = "#2b57d0";
const NLL_COLOR = "#c8651b";

/** Run async jobs with at most `limit` in flight. */
async function pool(jobs, limit) {
  const queue = [...jobs];
  const workers = Array.from({ length: Math.min(limit, queue.length) }, async () => {
    while (queue.length) await queue.shift()();
  });
  await Promise.all(workers);
}

class Dashboard {
  constructor({ me, projects, project }) {
    this.me = me;
    this.projects = projects;
    this.project = project;
    this.chart = null;
    this.queueRoundId = null;
    this.queueFigures = new Map(); // item id → <figure>
    this.thumbUrls = [];
    this.root = $("#dashboard");
  }

  async start() {
    this.root.hidden = false;
    this.bindCreateProject();
    $("#show-create").addEventListener("click", () => {
      $("#create-panel").scrollIntoView({ behavior: "smooth", block: "center" });
      $("#create-project [name=name]").focus({ preventScroll: true });
    });
    if (!this.project) {
      this.root.dataset.state = "no-project";
      $("#project-name").textContent = "No projects yet";
      $("#project-sub").textContent = "Create one: give it a name and its classes, then add images.";
      $("#create-project [name=name]").focus();
      return;
    }
    document.title = `Dashboard · ${this.project.name} · nextlabel`;
    this.renderPhaseLegend();
    this.fillSettings(this.project);
    this.bindActions();
    this.bindSettings();
    this.bindUpload();
    this.bindMembers();
    api.connection.addEventListener("change", ({ detail }) => {
      if (detail.online) hideBanner();
      else
        showBanner([
          el("strong", {}, "Can't reach the nextlabel server. "),
          "The figures below are from the last successful update; retrying.",
        ]);
    });
    await this.refresh();
    this.loadMembers();
    setInterval(() => this.refresh(), POLL_MS);
  }

  get pid() {
    return this.project.id;
  }

  async refresh() {
    try {
      const [project, metrics, rounds] = await Promise.all([
        api.get(`/projects/${this.pid}`),
        api.get(`/projects/${this.pid}/metrics`),
        api.get(`/projects/${this.pid}/rounds`),
      ]);
      this.project = project;
      this.renderHead(project, metrics);
      this.renderTiles(project, metrics);
      this.renderCurve(metrics);
      this.renderClassCounts(project, metrics);
      this.renderAnnotators(metrics);
      this.renderRounds(rounds);
      await this.renderQueue(metrics.queue);
    } catch (error) {
      if (!api.isUnavailable(error)) toast(`Could not refresh: ${error.message}`, "error");
    }
  }

  // --- summary -------------------------------------------------------------------------

  renderHead(project, metrics) {
    $("#project-name").textContent = project.name;
    $("#project-sub").textContent = [
      plural(project.classes.length, "class", "classes"),
      `${strategyName(project.strategy)}, ${project.query_size} per batch`,
      `retrain every ${plural(project.retrain_every, "label")}`,
      `${project.mc_samples} MC samples`,
    ].join(" · ");
    const retrain = $("#retrain");
    const queue = metrics.queue;
    const active =
      queue.active_round_id !== null && ["queued", "running"].includes(queue.active_round_status);
    retrain.disabled = active;
    retrain.textContent = active
      ? `Round ${queue.active_round_id} ${queue.active_round_status}…`
      : "Retrain now";
  }

  renderTiles(project, metrics) {
    const totals = metrics.totals;
    $("#tile-items").textContent = fmtInt(totals.items);
    $("#tile-items-sub").textContent =
      `${fmtInt(totals.pool)} pool · ${fmtInt(totals.validation)} validation`;
    $("#tile-labelled").textContent = fmtInt(totals.labelled);
    $("#tile-labelled-sub").textContent = totals.pool
      ? `${fmtPct(totals.labelled / totals.pool)} of the pool`
      : "no pool images yet";
    const last = metrics.learning_curve.at(-1);
    if (last) {
      $("#tile-model").textContent =
        last.accuracy === null ? `Round ${last.round_id}` : fmtPct(last.accuracy);
      $("#tile-model-sub").textContent =
        last.accuracy === null
          ? "no validation accuracy"
          : `round ${last.round_id} · NLL ${fmtNum(last.nll)} · ${plural(last.labels_used, "label")}`;
    } else {
      $("#tile-model").textContent = "None yet";
      $("#tile-model-sub").textContent = "random order until the first round";
    }
    const queue = metrics.queue;
    if (queue.active_round_id !== null && ["queued", "running"].includes(queue.active_round_status)) {
      $("#tile-retrain").textContent = queue.active_round_status === "running" ? "Training" : "Queued";
      $("#tile-retrain-sub").textContent = queue.active_round_waiting_for_broker
        ? `round ${queue.active_round_id} · waiting for the task broker`
        : `round ${queue.active_round_id}`;
    } else if (queue.pool_exhausted) {
      $("#tile-retrain").textContent = "Pool done";
      $("#tile-retrain-sub").textContent = "every pool image is labelled";
    } else {
      $("#tile-retrain").textContent = plural(queue.labels_until_retrain, "label");
      $("#tile-retrain-sub").textContent =
        `${fmtInt(queue.labels_since_round)} since the last round · every ${queue.retrain_every}`;
    }
  }

  // --- learning curve ------------------------------------------------------------------

  renderCurve(metrics) {
    const points = [...metrics.learning_curve].sort(
      (a, b) => a.labels_used - b.labels_used || a.round_id - b.round_id,
    );
    const note = $("#curve-note");
    note.textContent =
      metrics.validation.note || `${fmtInt(metrics.validation.with_known_label)} validation images`;
    $("#curve-table tbody").replaceChildren(
      ...points.map((point) =>
        el(
          "tr",
          {},
          el("td", {}, point.round_id),
          el("td", {}, point.labels_used),
          el("td", {}, fmtPct(point.accuracy)),
          el("td", {}, fmtNum(point.nll)),
        ),
      ),
    );
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
    this.chart = new uPlot(this.chartOptions(box.clientWidth), data, box);
    new ResizeObserver(() => {
      if (box.clientWidth) this.chart.setSize({ width: box.clientWidth, height: 280 });
    }).observe(box);
  }

  chartOptions(width) {
    const axis = {
      stroke: "#57606b",
      grid: { stroke: "#eceef1", width: 1 },
      ticks: { stroke: "#d9dde3", width: 1 },
    };
    const font = "12px system-ui, -apple-system, Segoe UI, Roboto, sans-serif";
    return {
      width: Math.max(width, 280),
      height: 280,
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

  // --- counts --------------------------------------------------------------------------

  renderClassCounts(project, metrics) {
    const counts = metrics.label_counts;
    const max = Math.max(1, ...Object.values(counts));
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

  renderAnnotators(metrics) {
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

  // --- rounds --------------------------------------------------------------------------

  renderPhaseLegend() {
    $("#phase-legend").replaceChildren(
      ...PHASES.map(([name, color]) => el("span", {}, el("i", { style: { background: color } }), name)),
    );
  }

  phaseCell(timings) {
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

  renderRounds(rounds) {
    const sorted = [...rounds].sort((a, b) => b.id - a.id);
    $("#rounds-every").textContent = this.project.retrain_every;
    $("#rounds-empty").hidden = sorted.length > 0;
    $("#rounds").hidden = sorted.length === 0;
    const rows = [];
    for (const round of sorted) {
      const metrics = round.metrics || {};
      rows.push(
        el(
          "tr",
          { dataset: { round: round.id, status: round.status } },
          el("td", {}, `#${round.id}`),
          el("td", {}, el("span", { class: "badge", dataset: { status: round.status } }, round.status)),
          el("td", {}, round.trigger),
          el("td", {}, strategyName(round.strategy)),
          el("td", { class: "num" }, fmtInt(round.labels_used)),
          el("td", { class: "num" }, typeof metrics.accuracy === "number" ? fmtPct(metrics.accuracy) : "–"),
          el("td", { class: "num" }, typeof metrics.nll === "number" ? fmtNum(metrics.nll) : "–"),
          el("td", {}, this.phaseCell(round.timings || {})),
          el("td", { class: "muted" }, fmtTime(round.finished_at || round.started_at || round.created_at)),
        ),
      );
      if (round.status === "failed" && round.error) {
        rows.push(el("tr", { class: "error-row" }, el("td", {}), el("td", { colspan: 8 }, round.error)));
      }
    }
    $("#rounds tbody").replaceChildren(...rows);
  }

  // --- queue ---------------------------------------------------------------------------

  async renderQueue(queue) {
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
    if (roundId !== this.queueRoundId) {
      this.queueRoundId = roundId;
      this.buildQueue(entries.slice(0, QUEUE_SHOWN));
    }
    for (const entry of entries) {
      const figure = this.queueFigures.get(entry.item_id);
      if (figure) figure.toggleAttribute("data-labelled", entry.labelled);
    }
  }

  buildQueue(entries) {
    for (const url of this.thumbUrls) URL.revokeObjectURL(url);
    this.thumbUrls = [];
    this.queueFigures.clear();
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
      this.queueFigures.set(entry.item_id, figure);
      const path = entry.image_url || `/items/${entry.item_id}/image`;
      jobs.push(async () => {
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
      });
      return figure;
    });
    $("#queue").replaceChildren(...figures);
    pool(jobs, THUMB_CONCURRENCY);
  }

  // --- actions -------------------------------------------------------------------------

  bindActions() {
    $("#retrain").addEventListener("click", async (event) => {
      const button = event.currentTarget;
      button.disabled = true;
      try {
        const round = await api.post(`/projects/${this.pid}/rounds`);
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
      await this.refresh();
    });
    for (const format of ["csv", "json"]) {
      $(`#export-${format}`).addEventListener("click", async (event) => {
        const button = event.currentTarget;
        button.disabled = true;
        try {
          const name = await api.download(
            `/projects/${this.pid}/export?format=${format}`,
            `${this.project.name}-labels.${format}`,
          );
          toast(`Downloaded ${name}`, "success");
        } catch (error) {
          toast(`Export failed: ${error.message}`, "error");
        } finally {
          button.disabled = false;
        }
      });
    }
  }

  fillSettings(project) {
    const form = $("#settings");
    const select = $("#set-strategy");
    select.replaceChildren(
      ...Object.entries(STRATEGY_LABELS).map(([id, name]) => el("option", { value: id }, name)),
    );
    form.strategy.value = project.strategy;
    form.query_size.value = project.query_size;
    form.retrain_every.value = project.retrain_every;
    form.mc_samples.value = project.mc_samples;
  }

  bindSettings() {
    const form = $("#settings");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = $("#settings-error");
      error.textContent = "";
      const body = { strategy: form.strategy.value };
      for (const name of ["query_size", "retrain_every", "mc_samples"]) {
        const value = Number(form[name].value);
        if (!Number.isInteger(value) || value < Number(form[name].min) || value > Number(form[name].max)) {
          error.textContent = `${form[name].closest("label").firstChild.textContent.trim()} must be a whole number from ${form[name].min} to ${form[name].max}.`;
          form[name].focus();
          return;
        }
        body[name] = value;
      }
      try {
        this.project = await api.patch(`/projects/${this.pid}`, body);
        this.fillSettings(this.project);
        toast("Settings saved. They apply from the next round.", "success");
        this.refresh();
      } catch (failure) {
        error.textContent = failure.message;
      }
    });
  }

  // --- upload --------------------------------------------------------------------------

  bindUpload() {
    const zone = $("#dropzone");
    const input = $("#file-input");
    zone.addEventListener("click", () => input.click());
    zone.addEventListener("keydown", (event) => {
      if (event.key === "Enter" || event.key === " ") {
        event.preventDefault();
        input.click();
      }
    });
    input.addEventListener("change", () => {
      if (input.files.length) this.upload([...input.files]);
      input.value = "";
    });
    for (const type of ["dragenter", "dragover"]) {
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("over");
      });
    }
    for (const type of ["dragleave", "drop"])
      zone.addEventListener(type, () => zone.classList.remove("over"));
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      const files = [...(event.dataTransfer?.files || [])];
      if (files.length) this.upload(files);
    });
    // A file dropped next to the zone must not navigate away from the dashboard.
    window.addEventListener("dragover", (event) => event.preventDefault());
    window.addEventListener("drop", (event) => event.preventDefault());
  }

  /** Split a selection into requests of bounded size; a zip always travels alone. */
  batches(files) {
    const batches = [];
    let current = [];
    let bytes = 0;
    for (const file of files) {
      const isZip = /\.zip$/i.test(file.name);
      if (
        current.length &&
        (isZip || current.length >= UPLOAD_BATCH_FILES || bytes + file.size > UPLOAD_BATCH_BYTES)
      ) {
        batches.push(current);
        current = [];
        bytes = 0;
      }
      current.push(file);
      bytes += file.size;
      if (isZip) {
        batches.push(current);
        current = [];
        bytes = 0;
      }
    }
    if (current.length) batches.push(current);
    return batches;
  }

  async upload(files) {
    const status = $("#upload-status");
    const report = $("#upload-report");
    const meter = $("#upload-meter");
    const total = files.reduce((sum, file) => sum + file.size, 0) || 1;
    let done = 0;
    const created = [];
    const skipped = [];
    const errors = [];
    status.hidden = false;
    report.replaceChildren();
    $("#upload-text").textContent = `Uploading ${plural(files.length, "file")}…`;
    const show = (loaded) => {
      const pct = Math.min(100, (100 * (done + loaded)) / total);
      meter.style.width = `${pct}%`;
      $("#upload-pct").textContent = `${pct.toFixed(0)}%`;
    };
    show(0);
    for (const batch of this.batches(files)) {
      const form = new FormData();
      for (const file of batch) form.append("files", file, file.name);
      const size = batch.reduce((sum, file) => sum + file.size, 0);
      try {
        const result = await api.upload(`/projects/${this.pid}/items`, form, (loaded) =>
          show(Math.min(loaded, size)),
        );
        created.push(...result.created);
        skipped.push(...result.skipped);
      } catch (error) {
        errors.push(`${batch.length === 1 ? batch[0].name : plural(batch.length, "file")}: ${error.message}`);
      }
      done += size;
      show(0);
    }
    $("#upload-text").textContent = errors.length ? "Upload finished with errors" : "Upload complete";
    this.renderUploadReport(created, skipped, errors);
    this.refresh();
  }

  renderUploadReport(created, skipped, errors) {
    const report = $("#upload-report");
    const parts = [
      el(
        "p",
        { id: "upload-summary" },
        el("strong", {}, `${plural(created.length, "image")} added`),
        skipped.length ? `, ${fmtInt(skipped.length)} skipped.` : ".",
      ),
    ];
    for (const message of errors) parts.push(el("p", { class: "form-error" }, message));
    if (skipped.length) {
      parts.push(
        el(
          "table",
          { class: "data", id: "skipped" },
          el("thead", {}, el("tr", {}, el("th", {}, "Skipped file"), el("th", {}, "Reason"))),
          el(
            "tbody",
            {},
            skipped
              .slice(0, SKIPPED_SHOWN)
              .map((file) => el("tr", {}, el("td", { class: "mono" }, file.name), el("td", {}, file.reason))),
          ),
        ),
      );
      if (skipped.length > SKIPPED_SHOWN)
        parts.push(el("p", { class: "muted" }, `and ${fmtInt(skipped.length - SKIPPED_SHOWN)} more.`));
    }
    report.replaceChildren(...parts);
  }

  // --- members -------------------------------------------------------------------------

  bindMembers() {
    const form = $("#new-annotator");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = $("#annotator-error");
      error.textContent = "";
      const name = form.elements.name.value.trim();
      if (!name) {
        error.textContent = "Give the annotator a name.";
        form.elements.name.focus();
        return;
      }
      try {
        const created = await api.post("/annotators", { name, role: form.elements.role.value });
        await api.put(`/projects/${this.pid}/members/${created.id}`);
        form.reset();
        this.showToken(created);
        this.loadMembers();
      } catch (failure) {
        error.textContent = failure.message;
      }
    });
  }

  showToken(created) {
    const box = $("#new-token");
    const code = el("code", { id: "new-token-value" }, created.token);
    const copy = el("button", { class: "btn", type: "button" }, "Copy");
    copy.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(created.token);
        copy.textContent = "Copied";
      } catch {
        getSelection().selectAllChildren(code);
      }
    });
    box.replaceChildren(
      el("strong", {}, `Token for ${created.name}`),
      ` (added to ${this.project.name}). It is shown only once: pass it on now.`,
      code,
      copy,
    );
    box.hidden = false;
  }

  async loadMembers() {
    let annotators;
    try {
      annotators = await api.get("/annotators");
    } catch (error) {
      if (!api.isUnavailable(error)) $("#annotator-error").textContent = error.message;
      return;
    }
    $("#members").replaceChildren(
      ...annotators.map((annotator) => {
        const box = el("input", { type: "checkbox", checked: annotator.project_ids.includes(this.pid) });
        box.addEventListener("change", async () => {
          try {
            if (box.checked) await api.put(`/projects/${this.pid}/members/${annotator.id}`);
            else await api.del(`/projects/${this.pid}/members/${annotator.id}`);
            toast(
              `${annotator.name} ${box.checked ? "added to" : "removed from"} ${this.project.name}`,
              "success",
            );
          } catch (error) {
            box.checked = !box.checked;
            toast(error.message, "error");
          }
        });
        return el(
          "li",
          {},
          el(
            "label",
            {},
            box,
            el("span", {}, annotator.name),
            el("span", { class: "badge role" }, annotator.role),
          ),
        );
      }),
    );
  }

  // --- new project ---------------------------------------------------------------------

  bindCreateProject() {
    const form = $("#create-project");
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const error = $("#create-error");
      error.textContent = "";
      const name = form.elements.name.value.trim();
      const classes = form.elements.classes.value
        .split(/[\n,]/)
        .map((part) => part.trim())
        .filter(Boolean);
      if (!name) {
        error.textContent = "Give the project a name.";
        form.elements.name.focus();
        return;
      }
      if (classes.length < 2) {
        error.textContent = "List at least two classes.";
        form.elements.classes.focus();
        return;
      }
      try {
        const project = await api.post("/projects", { name, classes });
        session.rememberProject(project.id);
        location.assign(`/dashboard?project=${project.id}`);
      } catch (failure) {
        error.textContent = failure.message;
      }
    });
  }
}

async function main() {
  const ready = await session.start({ allowNoProject: true });
  if (!ready) return;
  if (ready.me.role !== "admin") {
    $("#not-admin").hidden = false;
    return;
  }
  await new Dashboard(ready).start();
}

main().catch((error) => {
  showBanner(`Something went wrong: ${error.message}`);
  throw error;
});
