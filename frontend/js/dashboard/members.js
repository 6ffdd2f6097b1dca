// The members panel: every annotator with a checkbox for membership of this project, and
// the form that creates an annotator, adds them to the project and shows their token once.

import * as api from "../api.js";
import { $, el, toast } from "../ui.js";

export class Members {
  constructor(board) {
    this.board = board;
  }

  bind() {
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
        await api.put(`/projects/${this.board.pid}/members/${created.id}`);
        form.reset();
        this.showToken(created);
        this.load();
      } catch (failure) {
        error.textContent = failure.message;
      }
    });
  }

  showToken(created) {
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
    const box = $("#new-token");
    box.replaceChildren(
      el("strong", {}, `Token for ${created.name}`),
      ` (added to ${this.board.project.name}). It is shown only once: pass it on now.`,
      code,
      copy,
    );
    box.hidden = false;
  }

  async load() {
    let annotators;
    try {
      annotators = await api.get("/annotators");
    } catch (error) {
      if (!api.isUnavailable(error)) $("#annotator-error").textContent = error.message;
      return;
    }
    $("#members").replaceChildren(...annotators.map((annotator) => this.row(annotator)));
  }

  row(annotator) {
    const { board } = this;
    const box = el("input", { type: "checkbox", checked: annotator.project_ids.includes(board.pid) });
    box.addEventListener("change", async () => {
      try {
        if (box.checked) await api.put(`/projects/${board.pid}/members/${annotator.id}`);
        else await api.del(`/projects/${board.pid}/members/${annotator.id}`);
        toast(
          `${annotator.name} ${box.checked ? "added to" : "removed from"} ${board.project.name}`,
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
  }
}
