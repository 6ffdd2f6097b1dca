// The "Add images" panel: the drop zone (click, Enter or drop), uploads in requests of
// bounded size with one progress meter over them all, and the report of what was added,
// skipped or refused.

import * as api from "../api.js";
import { $, el, fmtInt, plural } from "../ui.js";

const BATCH_FILES = 200;
const BATCH_BYTES = 64 * 1024 * 1024;
const SKIPPED_SHOWN = 100;

/** Split a selection into requests of bounded size; a zip always travels alone. */
export function batches(files) {
  const out = [];
  let current = [];
  let bytes = 0;
  for (const file of files) {
    const isZip = /\.zip$/i.test(file.name);
    if (current.length && (isZip || current.length >= BATCH_FILES || bytes + file.size > BATCH_BYTES)) {
      out.push(current);
      current = [];
      bytes = 0;
    }
    current.push(file);
    bytes += file.size;
    if (isZip) {
      out.push(current);
      current = [];
      bytes = 0;
    }
  }
  if (current.length) out.push(current);
  return out;
}

export function bindUpload(board) {
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
    if (input.files.length) upload(board, [...input.files]);
    input.value = "";
  });
  for (const type of ["dragenter", "dragover"]) {
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  for (const type of ["dragleave", "drop"]) zone.addEventListener(type, () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    const files = [...(event.dataTransfer?.files || [])];
    if (files.length) upload(board, files);
  });
  // A file dropped next to the zone must not navigate away from the dashboard.
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => event.preventDefault());
}

async function upload(board, files) {
  const meter = $("#upload-meter");
  const total = files.reduce((sum, file) => sum + file.size, 0) || 1;
  let done = 0;
  const created = [];
  const skipped = [];
  const errors = [];
  $("#upload-status").hidden = false;
  $("#upload-report").replaceChildren();
  $("#upload-text").textContent = `Uploading ${plural(files.length, "file")}…`;
  const show = (loaded) => {
    const pct = Math.min(100, (100 * (done + loaded)) / total);
    meter.style.width = `${pct}%`;
    $("#upload-pct").textContent = `${pct.toFixed(0)}%`;
  };
  show(0);
  for (const batch of batches(files)) {
    const form = new FormData();
    for (const file of batch) form.append("files", file, file.name);
    const size = batch.reduce((sum, file) => sum + file.size, 0);
    try {
      const result = await api.upload(`/projects/${board.pid}/items`, form, (loaded) =>
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
  renderReport(created, skipped, errors);
  board.refresh();
}

function renderReport(created, skipped, errors) {
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
  $("#upload-report").replaceChildren(...parts);
}
