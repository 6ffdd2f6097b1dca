// The settings form: strategy, query size, retrain interval, MC samples and the image size
// and colour the model reads (from the next round; decoded images are cached per size and
// colour, so a change never reuses old decodes). It is filled
// from the project, checked against the inputs' own min and max, and saved with PATCH; the
// saved project becomes the dashboard's project.

import * as api from "../api.js";
import { $, el, strategies, toast } from "../ui.js";

const NUMBERS = ["query_size", "retrain_every", "mc_samples", "image_size"];

export function fillSettings(project) {
  const form = $("#settings");
  $("#set-strategy").replaceChildren(
    ...strategies().map(({ name, label }) => el("option", { value: name }, label)),
  );
  form.strategy.value = project.strategy;
  for (const name of NUMBERS) form[name].value = project[name];
  form.image_channels.value = String(project.image_channels);
}

export function bindSettings(board) {
  const form = $("#settings");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const error = $("#settings-error");
    error.textContent = "";
    const body = { strategy: form.strategy.value, image_channels: Number(form.image_channels.value) };
    for (const name of NUMBERS) {
      const input = form[name];
      const value = Number(input.value);
      if (!Number.isInteger(value) || value < Number(input.min) || value > Number(input.max)) {
        error.textContent = `${input.closest("label").firstChild.textContent.trim()} must be a whole number from ${input.min} to ${input.max}.`;
        input.focus();
        return;
      }
      body[name] = value;
    }
    try {
      board.project = await api.patch(`/projects/${board.pid}`, body);
      fillSettings(board.project);
      toast("Settings saved. They apply from the next round.", "success");
      board.refresh();
    } catch (failure) {
      error.textContent = failure.message;
    }
  });
}
