// The class buttons and the keyboard: one button per class with its hotkey, the keydown
// handler that maps keys to label / skip / undo (keys.js), the button flash, and the class
// name shown big over the image for a moment after a label (#confirm).
//
// Owns #classes, #confirm and `confirmTimer`.

import { actionForKey, keyCaption } from "../keys.js";
import { $, el } from "../ui.js";

const CONFIRM_MS = 900; // how long the class name stays over the image after a label

export const classes = {
  renderClasses() {
    const box = $("#classes");
    box.replaceChildren(
      ...this.classes.map((name, index) => {
        const key = this.hotkeys[name] || null;
        return el(
          "button",
          {
            class: "class-btn",
            type: "button",
            "aria-label": key ? `Label as ${name} (key ${keyCaption(key)})` : `Label as ${name}`,
            "aria-keyshortcuts": key || undefined,
            dataset: { index },
            onclick: () => this.label(index),
          },
          key ? el("kbd", { "aria-hidden": "true" }, keyCaption(key)) : null,
          el("span", {}, name),
        );
      }),
    );
  },

  bindKeys() {
    document.addEventListener("keydown", (event) => {
      const action = actionForKey(event, this.keyMap);
      if (!action) return;
      event.preventDefault(); // no page scroll on space, no button activation
      if (event.repeat) return; // a held key must not label a run of images
      performance.clearMarks("nextlabel:key");
      performance.mark("nextlabel:key");
      if (action.type === "label") this.label(action.index);
      else if (action.type === "skip") this.skip();
      else this.undo();
    });
    // Space on a focused button would also "click" it on keyup; the keydown already acted.
    document.addEventListener("keyup", (event) => {
      if (event.key === " " && event.target instanceof HTMLButtonElement) event.preventDefault();
    });
  },

  flash(index) {
    const button = document.querySelector(`.class-btn[data-index="${index}"]`);
    if (!button) return;
    button.classList.add("flash");
    setTimeout(() => button.classList.remove("flash"), 140);
  },

  /** The class just given, big, over the image where the eye already is, for a moment. */
  confirm(label, kind = "label") {
    const badge = $("#confirm");
    badge.replaceChildren(kind === "label" ? el("span", { "aria-hidden": "true" }, "✓ ") : "", label);
    badge.dataset.kind = kind;
    badge.hidden = false;
    // Restart the fade-out even when the same class is given twice in a row.
    badge.classList.remove("show");
    void badge.offsetWidth;
    badge.classList.add("show");
    clearTimeout(this.confirmTimer);
    this.confirmTimer = setTimeout(() => {
      badge.hidden = true;
      badge.classList.remove("show");
    }, CONFIRM_MS);
  },
};
