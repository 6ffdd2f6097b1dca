// The representation fields both project forms share (new project and settings): the network
// (from the server's catalog, with its description), the backbone and weights file shown only
// for "custom", the cold start (also from the catalog) and the near-duplicate policy and
// distance. The forms send what these fields hold and show the API's answer: whether a
// custom backbone is complete is the API's to say (a 422 with the reason), not this module's.

import { coldStarts, el, networkName, networks } from "../ui.js";

/** Fill the form's selects from the catalog and keep the custom inputs in step. */
export function bindRepresentation(form) {
  fillChoices(form);
  form.elements.network.addEventListener("change", () => showNetwork(form));
  showNetwork(form);
}

/** The catalog's networks and cold starts as options, once per form. */
function fillChoices(form) {
  for (const [select, entries] of [
    [form.elements.network, networks()],
    [form.elements.cold_start, coldStarts()],
  ]) {
    if (select.options.length) continue;
    select.replaceChildren(
      ...entries.map(({ name, label, description }) =>
        el("option", { value: name, title: description }, label),
      ),
    );
  }
}

/** The chosen network's description, and the custom inputs only while "custom" is chosen. */
function showNetwork(form) {
  const network = form.elements.network.value;
  for (const field of form.querySelectorAll("[data-custom-only]")) field.hidden = network !== "custom";
  const entry = networks().find(({ name }) => name === network);
  form.querySelector("[data-network-note]").textContent = entry ? entry.description : "";
}

/** Put a project's representation settings into the form. */
export function fillRepresentation(form, project) {
  fillChoices(form);
  const fields = form.elements;
  fields.network.value = project.network;
  fields.custom_backbone.value = project.custom_backbone || "";
  fields.custom_weights.value = project.custom_weights || "";
  fields.cold_start.value = project.cold_start;
  fields.near_duplicates.value = project.near_duplicates;
  fields.near_duplicate_distance.value = project.near_duplicate_distance ?? "";
  showNetwork(form);
}

/**
 * The fields as the API takes them: {body} or, for a distance out of range, {error, input}.
 * The backbone and weights travel only with "custom" (the API refuses them with any other
 * network); an empty one travels as null so the API names what is missing.
 */
export function readRepresentation(form) {
  const fields = form.elements;
  const body = {
    network: fields.network.value,
    cold_start: fields.cold_start.value,
    near_duplicates: fields.near_duplicates.value,
  };
  if (body.network === "custom") {
    body.custom_backbone = fields.custom_backbone.value.trim() || null;
    body.custom_weights = fields.custom_weights.value.trim() || null;
  }
  const distance = fields.near_duplicate_distance;
  const text = distance.value.trim();
  if (text === "" && !distance.validity.badInput) {
    body.near_duplicate_distance = null;
  } else {
    const value = Number(text);
    if (!Number.isFinite(value) || value < 0 || value > 1) {
      return {
        error: "Duplicate distance must be a number from 0 to 1 (or empty for the default).",
        input: distance,
      };
    }
    body.near_duplicate_distance = value;
  }
  return { body };
}

/** "Automatic → EfficientNet-Lite0 (pretrained)": the network rounds use, and why. */
export function resolvedNetworkText(project) {
  const resolved = project.resolved_network || project.network;
  if (project.network === "auto") return `${networkName("auto")} → ${networkName(resolved)}`;
  return networkName(resolved);
}
