// The "New project" panel and the head's "New project" button that scrolls to it: the form
// creates the project and opens its dashboard.

import * as api from "../api.js";
import * as session from "../session.js";
import { $ } from "../ui.js";

export function bindCreateProject() {
  $("#show-create").addEventListener("click", () => {
    $("#create-panel").scrollIntoView({ behavior: "smooth", block: "center" });
    focusCreateProject({ preventScroll: true });
  });
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

export function focusCreateProject(options) {
  $("#create-project [name=name]").focus(options);
}
