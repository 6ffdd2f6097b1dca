// The "New project" panel and the head's "New project" button that scrolls to it: the form
// creates the project (name, classes, image size and colour, and the representation: network,
// cold start, near duplicates) and opens its dashboard. What the API refuses (a custom
// backbone without its weights, say) is shown under the form in the API's words.

import * as api from "../api.js";
import * as session from "../session.js";
import { $ } from "../ui.js";
import { bindRepresentation, readRepresentation } from "./representation.js";

export function bindCreateProject() {
  $("#show-create").addEventListener("click", () => {
    $("#create-panel").scrollIntoView({ behavior: "smooth", block: "center" });
    focusCreateProject({ preventScroll: true });
  });
  const form = $("#create-project");
  bindRepresentation(form);
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
    const size = form.elements.image_size;
    const imageSize = Number(size.value);
    if (!Number.isInteger(imageSize) || imageSize < Number(size.min) || imageSize > Number(size.max)) {
      error.textContent = `Image size must be a whole number from ${size.min} to ${size.max}.`;
      size.focus();
      return;
    }
    const imageChannels = Number(form.elements.image_channels.value);
    const representation = readRepresentation(form);
    if (representation.error) {
      error.textContent = representation.error;
      representation.input.focus();
      return;
    }
    try {
      const project = await api.post("/projects", {
        name,
        classes,
        image_size: imageSize,
        image_channels: imageChannels,
        ...representation.body,
      });
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
