// The page head: the project's name, the one-line summary of its settings under it, the
// tab title, and what the head says when there is no project yet.

import { $, plural, strategyName } from "../ui.js";

export function showNoProject(root) {
  root.dataset.state = "no-project";
  $("#project-name").textContent = "No projects yet";
  $("#project-sub").textContent = "Create one: give it a name and its classes, then add images.";
}

export function setTitle(project) {
  document.title = `Dashboard · ${project.name} · nextlabel`;
}

export function renderHead(project) {
  $("#project-name").textContent = project.name;
  $("#project-sub").textContent = [
    plural(project.classes.length, "class", "classes"),
    `${strategyName(project.strategy)}, ${project.query_size} per batch`,
    `retrain every ${plural(project.retrain_every, "label")}`,
    `${project.mc_samples} MC samples`,
  ].join(" · ");
}
