// The page head: the project's name, the one-line summary of its settings under it, the
// tab title, what the head says when there is no project yet, and the panel under it that
// says how to add images while the project has none.

import { $, plural, strategyName } from "../ui.js";
import { resolvedNetworkText } from "./representation.js";

export function showNoProject(root) {
  root.dataset.state = "no-project";
  $("#project-name").textContent = "No projects yet";
  $("#project-sub").textContent = "Create one: give it a name and its classes, then add images.";
}

export function setTitle(project) {
  document.title = `Dashboard · ${project.name} · nextlabel`;
}

/** A project with no images: say how to add them (the figures below would all be zero). */
export function renderEmptyProject(root, project, metrics) {
  const empty = metrics.totals.items === 0;
  root.dataset.state = empty ? "empty-project" : "ready";
  $("#empty-project").hidden = !empty;
  $("#empty-project-command").textContent = `nextlabel import ${project.id} ./images`;
}

export function renderHead(project) {
  $("#project-name").textContent = project.name;
  $("#project-sub").textContent = [
    plural(project.classes.length, "class", "classes"),
    `${strategyName(project.strategy)}, ${project.query_size} per batch`,
    `retrain every ${plural(project.retrain_every, "label")}`,
    `${project.mc_samples} MC samples`,
    `images ${project.image_size}×${project.image_size} ${project.image_channels === 3 ? "RGB" : "greyscale"}`,
    resolvedNetworkText(project),
  ].join(" · ");
}
