// The labelling page.
//
// Speed comes from never waiting on the network between keypresses:
// - a buffer of the next items is kept full from GET /projects/{pid}/next, and each buffered
//   item's image is fetched (with the Bearer header, as a Blob) and decoded ahead of time, so
//   the next image is a DOM swap of an already-decoded <img>;
// - labels, skips and undos go to the outbox (outbox.js), which persists them before the page
//   moves on and sends them in order in the background, retrying while the server is away;
// - every item `next` leases to this page that it will not show (pushed out of the buffer by
//   a new model, buffered too long, more than it asked for) is handed back at once with
//   DELETE /items/{iid}/lease, and the items still on hand when the page goes away are
//   handed back on `pagehide`, so other annotators need not wait for the leases to expire.
//
// window.nextlabel exposes the buffer and the outbox read-only, for the browser tests and for
// anyone debugging in the console.

// Each part of the page lives in a module of its own under label/, as a set of the Labeller's
// methods installed on its prototype below: the state is this one object's, so the parts call
// each other as `this.refill()`, `this.show()` and so on, and no part imports another's code
// but the constants it needs. What each part owns is written at its top.

import * as api from "./api.js";
import { classKeyMap } from "./keys.js";
import { actions } from "./label/actions.js";
import { classes } from "./label/classes.js";
import { model } from "./label/model.js";
import { prefetch } from "./label/prefetch.js";
import { METRICS_EVERY_MS, progress } from "./label/progress.js";
import { stage } from "./label/stage.js";
import { sync } from "./label/sync.js";
import { Outbox, namespaceFor } from "./outbox.js";
import * as session from "./session.js";
import { $, el, showBanner, toast } from "./ui.js";

class Labeller {
  constructor({ me, project }) {
    this.me = me;
    this.project = project;
    this.classes = project.classes;
    this.hotkeys = project.effective_hotkeys || {};
    this.keyMap = classKeyMap(this.classes, this.hotkeys);
    this.confirmTimer = null;
    this.current = null; // the Entry on stage
    this.buffer = []; // Entries ready to show next, in order
    this.history = []; // [{entry, kind, opId, label}] for undo, newest last
    this.doneIds = new Set(); // items labelled or skipped in this page
    this.refilling = false;
    this.exhausted = false;
    this.refillTimer = null;
    this.releasing = Promise.resolve(); // hand-backs under way: `next` waits for them
    this.handingBack = new Set(); // their item ids: an answer to an earlier `next` may list them
    this.reorderFor = null; // a new model's round whose queue should come first
    this.metrics = null;
    this.knownRoundId = undefined;
    this.metricsAllowed = true;
    this.ackedDelta = 0; // label count change the server has but the last metrics don't show
    this.stage = $("#stage");
    this.outbox = new Outbox(namespaceFor(api.getToken()), (op) => this.deliver(op));
  }

  start() {
    $("#labeller").hidden = false;
    document.title = `Label · ${this.project.name} · nextlabel`;
    this.renderClasses();
    this.bindKeys();
    $("#skip").addEventListener("click", () => this.skip());
    $("#undo").addEventListener("click", () => this.undo());
    this.outbox.addEventListener("change", () => {
      this.renderSync();
      // Everything sent: fetch fresh totals soon, rather than at the next regular poll.
      if (this.outbox.size === 0) this.pollSoon();
    });
    this.outbox.addEventListener("rejected", ({ detail }) => {
      toast(
        `The server refused a ${detail.op.kind} for item ${detail.op.item_id}: ${detail.error.message}`,
        "error",
        8000,
      );
    });
    this.outbox.addEventListener("unauthorized", () => {
      showBanner([
        "Your token is no longer accepted. Your labels are kept in this browser; ",
        el("button", { class: "btn", type: "button", onclick: session.signOut }, "Sign in again"),
      ]);
    });
    api.connection.addEventListener("change", ({ detail }) => this.onConnection(detail.online));
    window.addEventListener("pagehide", () => this.handBackOnExit());
    window.addEventListener("pageshow", (event) => {
      if (event.persisted) this.restoreBuffer();
    });
    this.renderSync();
    this.outbox.flushNow(); // anything left from an earlier visit
    this.refill();
    this.pollMetrics();
    setInterval(() => this.pollMetrics(), METRICS_EVERY_MS);
    window.nextlabel = this.inspector();
  }

  inspector() {
    const labeller = this;
    return Object.freeze({
      get current() {
        return labeller.current && { id: labeller.current.id, url: labeller.current.url };
      },
      get buffer() {
        return labeller.buffer.map((entry) => ({
          id: entry.id,
          url: entry.url,
          loaded: entry.loaded,
          round: entry.next.round_id,
        }));
      },
      get pending() {
        return labeller.outbox.pending();
      },
    });
  }
}

Object.assign(Labeller.prototype, prefetch, stage, model, classes, actions, sync, progress);

async function main() {
  const ready = await session.start();
  if (!ready) return;
  new Labeller(ready).start();
}

main().catch((error) => {
  showBanner(`Something went wrong: ${error.message}`);
  throw error;
});
