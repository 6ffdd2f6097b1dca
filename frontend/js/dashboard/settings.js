// The settings form: strategy, query size, retrain interval, MC samples, the image size and
// colour the model reads (from the next round; decoded images are cached per size and
// colour, so a change never reuses old decodes) and the representation (network, cold start,
// near duplicates: representation.js), with the network rounds really use under it
// ("Automatic → ..."). It is filled from the project, checked against the inputs' own min and
// max, and saved with PATCH; the saved project becomes the dashboard's project.
//
// Only the fields that changed are sent: on frozen features the API queues a round that
// embeds every image anew whenever a request names the network, backbone or image settings,
// so resending unchanged ones would start that work for nothing.

import * as api from "../api.js";
import { $, el, strategies, toast } from "../ui.js";
import {
  bindRepresentation,
  fillRepresentation,
  readRepresentation,
  resolvedNetworkText,
} from "./representation.js";

const NUMBERS = ["query_size", "retrain_every", "mc_samples", "image_size"];

export function fillSettings(project) {
  const form = $("#settings");
  $("#set-strategy").replaceChildren(
    ...strategies().map(({ name, label }) => el("option", { value: name }, label)),
  );
  form.strategy.value = project.strategy;
  for (const name of NUMBERS) form[name].value = project[name];
  form.image_channels.value = String(project.image_channels);
  fillRepresentation(form, project);
  renderResolvedNetwork(project);
}

/** The network rounds use; refreshed with the project, so a change saved elsewhere shows. */
export function renderResolvedNetwork(project) {
  $("#resolved-network").replaceChildren("Rounds use: ", el("strong", {}, resolvedNetworkText(project)));
}

/** The form's values as the API takes them: {body} or {error, input}. */
function readSettings(form) {
  const body = { strategy: form.strategy.value, image_channels: Number(form.image_channels.value) };
  for (const name of NUMBERS) {
    const input = form[name];
    const value = Number(input.value);
    if (!Number.isInteger(value) || value < Number(input.min) || value > Number(input.max)) {
      const label = input.closest("label").firstChild.textContent.trim();
      return { error: `${label} must be a whole number from ${input.min} to ${input.max}.`, input };
    }
    body[name] = value;
  }
  const representation = readRepresentation(form);
  if (representation.error) return representation;
  return { body: { ...body, ...representation.body } };
}

/** The fields whose value differs from the project's. */
function changedFrom(project, body) {
  return Object.fromEntries(Object.entries(body).filter(([name, value]) => value !== project[name]));
}

export function bindSettings(board) {
  const form = $("#settings");
  bindRepresentation(form);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#settings-error");
    error.textContent = "";
    const read = readSettings(form);
    if (read.error) {
      error.textContent = read.error;
      read.input.focus();
      return;
    }
    const changes = changedFrom(board.project, read.body);
    if (Object.keys(changes).length === 0) {
      toast("Nothing to save: the settings are as they were.");
      return;
    }
    try {
      board.project = await api.patch(`/projects/${board.pid}`, changes);
      fillSettings(board.project);
      toast("Settings saved. They apply from the next round.", "success");
      board.refresh();
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
}
