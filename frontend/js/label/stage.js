// The stage: the image being labelled (a DOM swap of an already-decoded <img>), or the message
// shown in its place (loading, could not load, nothing to label, waiting for the server), and
// the performance marks the browser tests read for key-to-image latency.
//
// Owns the Labeller's `current` (the Entry on stage) and #stage.

import * as api from "../api.js";
import { $, el } from "../ui.js";

export const stage = {
  show(entry) {
    this.current = entry;
    for (const button of document.querySelectorAll(".class-btn[data-guess]")) delete button.dataset.guess;
    if (!entry) {
      this.renderEmpty();
      this.renderFacts(null);
      return;
    }
    entry.shownAt = null;
    if (entry.loaded) {
      this.display(entry);
    } else {
      this.stageMessage("Loading image…");
      if (entry.error) entry.ready = entry.load();
      entry.ready.then(() => {
        if (this.current !== entry) return;
        if (entry.loaded) this.display(entry);
        else
          this.stageMessage(
            "This image could not be loaded.",
            "Skip it with Space, or wait: it is retried when the server answers.",
          );
      });
    }
    this.renderFacts(entry.next);
  },

  display(entry) {
    this.stage.replaceChildren(entry.img);
    entry.shownAt = performance.now();
    performance.mark("nextlabel:shown", { detail: { item: entry.id } });
    if (performance.getEntriesByName("nextlabel:key", "mark").length) {
      performance.measure("nextlabel:key-to-image", "nextlabel:key", "nextlabel:shown");
    }
  },

  stageMessage(title, detail) {
    this.stage.replaceChildren(
      el("div", { class: "stage-message", id: "stage-message" }, el("strong", {}, title), detail || ""),
    );
  },

  renderEmpty() {
    if (this.current) return;
    $("#item-name").textContent = "";
    $("#item-meta").textContent = "";
    if (!api.connection.online) {
      this.stageMessage(
        "Waiting for the server",
        "Your labels are saved in this browser and will be sent when it is back.",
      );
    } else if (this.exhausted) {
      this.stageMessage(
        "Nothing to label right now",
        "Every image is labelled, skipped by you, or being labelled by someone else. This page checks again every few seconds.",
      );
    } else {
      this.stageMessage("Loading images…");
    }
  },
};
