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

import * as api from "./api.js";
import { actionForKey, classKeyMap, keyCaption } from "./keys.js";
import { Outbox, namespaceFor } from "./outbox.js";
import * as session from "./session.js";
import { $, el, fmtInt, fmtNum, fmtPct, hideBanner, plural, showBanner, strategyName, toast } from "./ui.js";

const BUFFER_TARGET = 6; // items held ready, images decoded
const REFILL_BELOW = 3; // ask for more when fewer than this are ready
const MAX_NEXT = 50; // the most items one GET /next asks for
const HISTORY_LIMIT = 20; // labelled items kept, with their images, for undo
const METRICS_EVERY_MS = 7000;
const EMPTY_RETRY_MS = 8000;
const REFILL_RETRY_MS = 3000;
// Leases last 10 minutes by default; an item buffered this long is handed back and re-fetched
// (which renews its lease) rather than labelled after someone else may have received it.
const BUFFER_MAX_AGE_MS = 5 * 60 * 1000;
const CONFIRM_MS = 900; // how long the class name stays over the image after a label

/** One item from GET /next, with its image fetched and decoded ahead of display. */
class Entry {
  constructor(next) {
    this.next = next;
    this.id = next.item.id;
    this.fetchedAt = Date.now();
    this.img = new Image();
    // Not the file name: it may give the answer away (the project's show_filenames).
    this.img.alt = `Image to label, item ${next.item.id}`;
    this.img.draggable = false;
    this.img.decoding = "sync";
    if (Math.max(next.item.width, next.item.height) < 256) this.img.classList.add("pixelated");
    this.url = null;
    this.loaded = false;
    this.error = null;
    this.ready = this.load();
  }

  async load() {
    this.error = null;
    try {
      if (!this.url) {
        const blob = await api.fetchBlob(this.next.item.image_url);
        this.url = URL.createObjectURL(blob);
        this.img.src = this.url;
      }
      await this.img.decode();
      this.loaded = true;
    } catch (error) {
      this.error = error;
    }
    return this;
  }

  get stale() {
    return Date.now() - this.fetchedAt > BUFFER_MAX_AGE_MS;
  }

  release() {
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
    this.loaded = false;
  }
}

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

  // --- sending -------------------------------------------------------------------------

  async deliver(op) {
    const headers = { "Idempotency-Key": op.id };
    if (op.kind === "label") {
      await api.post(`/items/${op.item_id}/labels`, { label: op.label, ms_spent: op.ms_spent }, { headers });
      this.ackedDelta += 1;
    } else if (op.kind === "skip") {
      await api.post(`/items/${op.item_id}/skip`, undefined, { headers });
    } else if (op.kind === "unskip") {
      await api.del(`/items/${op.item_id}/skip`, { headers });
    } else if (op.kind === "undo") {
      try {
        await api.del(`/items/${op.item_id}/labels/mine`, { headers });
        this.ackedDelta -= 1;
      } catch (error) {
        // 404: nothing to undo any more (a retry of an undo whose reply was lost).
        if (!(error instanceof api.ApiError && error.status === 404)) throw error;
      }
    }
  }

  onConnection(online) {
    if (online) {
      hideBanner();
      this.outbox.flushNow();
      // Images that failed while the server was away: fetch them again now.
      for (const entry of this.buffer) if (entry.error) entry.ready = entry.load();
      if (this.current && !this.current.loaded) this.show(this.current);
      if (this.buffer.length < REFILL_BELOW) this.refill();
    } else {
      this.renderOffline();
    }
    this.renderSync();
    if (!this.current) this.renderEmpty();
  }

  renderOffline() {
    const waiting = this.outbox.size;
    showBanner([
      el("strong", {}, "Can't reach the nextlabel server. "),
      waiting
        ? `${plural(waiting, "change")} saved in this browser will be sent when it is back. Keep labelling.`
        : "Keep labelling: your labels are saved in this browser and sent when it is back.",
    ]);
  }

  renderSync() {
    const badge = $("#sync-state");
    const waiting = this.outbox.size;
    document.body.dataset.pending = String(waiting);
    badge.hidden = false;
    if (!api.connection.online) {
      badge.dataset.state = "offline";
      badge.textContent = waiting ? `Offline · ${fmtInt(waiting)} waiting` : "Offline";
      this.renderOffline();
    } else if (waiting) {
      badge.dataset.state = "pending";
      badge.textContent = `Sending ${fmtInt(waiting)}…`;
    } else {
      badge.dataset.state = "ok";
      badge.textContent = "All labels saved";
    }
    this.renderProgress();
  }

  // --- the buffer ----------------------------------------------------------------------

  /** Items the server may still hand out but this page must not show again. */
  heldIds() {
    const held = this.outbox.pendingItemIds();
    if (this.current) held.add(this.current.id);
    return held;
  }

  async refill() {
    if (this.refilling) return;
    clearTimeout(this.refillTimer);
    const modelRound = this.reorderFor;
    const want = BUFFER_TARGET - this.buffer.length + (this.current ? 0 : 1);
    if (want <= 0 && modelRound === null) return;
    this.refilling = true;
    this.reorderFor = null;
    let retryIn = null;
    try {
      // Items handed back must be free before `next` runs, or it would re-serve them to us.
      await this.releasing;
      // The server re-serves the items already leased to this annotator first, so ask for
      // enough to get past those on this page or waiting in the outbox.
      const extra = modelRound === null ? want : BUFFER_TARGET;
      const n = Math.min(MAX_NEXT, this.heldIds().size + this.buffer.length + extra);
      const items = await api.get(`/projects/${this.project.id}/next?n=${n}`);
      const held = this.heldIds();
      const usable = items.filter(
        (next) =>
          !held.has(next.item.id) && !this.doneIds.has(next.item.id) && !this.handingBack.has(next.item.id),
      );
      const before = this.buffer.map((entry) => entry.id);
      if (modelRound !== null) {
        this.rebuildBuffer(usable, modelRound);
      } else {
        const buffered = new Set(before);
        const fresh = usable.filter((next) => !buffered.has(next.item.id));
        for (const next of fresh.slice(0, want)) this.buffer.push(new Entry(next));
        this.exhausted = fresh.length === 0;
      }
      this.handBackUnused([...before, ...items.map((next) => next.item.id)], held);
      if (this.exhausted) retryIn = EMPTY_RETRY_MS;
    } catch (error) {
      if (!api.isUnavailable(error)) toast(`Could not fetch the next images: ${error.message}`, "error");
      if (modelRound !== null) this.reorderFor ??= modelRound;
      retryIn = REFILL_RETRY_MS;
    } finally {
      this.refilling = false;
    }
    if (!this.current && this.buffer.length) this.advance();
    else if (!this.current) this.show(null);
    else if (this.reorderFor !== null && retryIn === null) this.refill();
    else if (!this.exhausted && retryIn === null && this.buffer.length < REFILL_BELOW) this.refill();
    if (retryIn !== null) this.refillTimer = setTimeout(() => this.refill(), retryIn);
  }

  /**
   * A new model: put its queue's picks first, by rank, and keep a full buffer of them. Items
   * already buffered keep their prefetched image but take the new round's facts (its
   * prediction); the ones pushed out are handed back (by the caller, `refill`).
   */
  rebuildBuffer(usable, roundId) {
    const byRank = (a, b) => (a.rank ?? Infinity) - (b.rank ?? Infinity);
    const picked = usable.filter((next) => next.round_id === roundId).sort(byRank);
    const others = usable.filter((next) => next.round_id !== roundId);
    const previous = new Map(this.buffer.map((entry) => [entry.id, entry]));
    this.buffer = [...picked, ...others].slice(0, BUFFER_TARGET).map((next) => {
      const entry = previous.get(next.item.id);
      if (!entry) return new Entry(next);
      previous.delete(next.item.id);
      entry.next = next;
      return entry;
    });
    for (const entry of previous.values()) entry.release();
    this.exhausted = this.buffer.length === 0;
  }

  /** Of the items `next` leased to us (`ids`), hand back those this page neither holds nor buffers. */
  handBackUnused(ids, held) {
    const kept = new Set(this.buffer.map((entry) => entry.id));
    this.handBack(ids.filter((id) => !held.has(id) && !kept.has(id)));
  }

  /**
   * Release this annotator's leases on items the page will not show, so `next` can serve them
   * to others now. Items with an operation in the outbox are left alone: a label or skip
   * releases the lease itself, an undo leases the item back on purpose.
   */
  handBack(ids) {
    const pending = this.outbox.pendingItemIds();
    const free = [...new Set(ids)].filter((id) => !pending.has(id));
    if (!free.length) return;
    // Best effort: a lease that is not handed back simply expires.
    const released = free.map((id) => {
      this.handingBack.add(id);
      return api
        .del(`/items/${id}/lease`)
        .catch(() => {})
        .finally(() => this.handingBack.delete(id));
    });
    this.releasing = Promise.all([this.releasing, ...released]);
  }

  /** The page is going away: hand back the item on stage and the buffered ones. */
  handBackOnExit() {
    const pending = this.outbox.pendingItemIds();
    const entries = this.current ? [this.current, ...this.buffer] : this.buffer;
    for (const { id } of entries) {
      if (!pending.has(id)) api.sendOnExit("DELETE", `/items/${id}/lease`);
    }
  }

  /** Back from the back/forward cache: the buffer's leases were handed back, so fetch anew. */
  restoreBuffer() {
    for (const entry of this.buffer) entry.release();
    this.buffer = [];
    this.refill();
  }

  advance() {
    let next = this.buffer.shift() || null;
    while (next && next.stale) {
      next.release();
      this.handBack([next.id]);
      next = this.buffer.shift() || null;
    }
    this.show(next);
    if (this.buffer.length < REFILL_BELOW) this.refill();
  }

  // --- the stage -----------------------------------------------------------------------

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
  }

  display(entry) {
    this.stage.replaceChildren(entry.img);
    entry.shownAt = performance.now();
    performance.mark("nextlabel:shown", { detail: { item: entry.id } });
    if (performance.getEntriesByName("nextlabel:key", "mark").length) {
      performance.measure("nextlabel:key-to-image", "nextlabel:key", "nextlabel:shown");
    }
  }

  stageMessage(title, detail) {
    this.stage.replaceChildren(
      el("div", { class: "stage-message", id: "stage-message" }, el("strong", {}, title), detail || ""),
    );
  }

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
  }

  renderFacts(next) {
    const guess = $("#guess");
    const why = $("#why");
    if (!next) {
      $("#item-name").textContent = "";
      $("#item-meta").textContent = "";
      why.replaceChildren();
      return;
    }
    const { item } = next;
    // The server sends annotators no file name unless the project shows them; an admin
    // labelling gets one either way, and the page shows it only where the project says so.
    const filename = this.project.show_filenames && item.filename ? item.filename : "";
    $("#item-name").textContent = filename;
    $("#item-name").title = filename;
    $("#item-meta").textContent = `#${item.id} · ${item.width}×${item.height}`;

    const prediction = next.prediction;
    if (prediction) {
      const index = this.classes.indexOf(prediction.label);
      const button = document.querySelector(`.class-btn[data-index="${index}"]`);
      if (button) button.dataset.guess = "";
      const top = prediction.top?.length
        ? prediction.top
        : [{ label: prediction.label, probability: prediction.confidence }];
      guess.replaceChildren(
        ...top.map((choice, rank) =>
          el(
            "div",
            { class: rank === 0 ? "guess-choice first" : "guess-choice", dataset: { rank } },
            el(
              "div",
              { class: "guess-line" },
              el(
                "span",
                { class: "guess-label", id: rank ? undefined : "guess-label" },
                choice.label,
              ),
              el(
                "span",
                { class: "guess-conf", id: rank ? undefined : "guess-confidence" },
                rank ? fmtPct(choice.probability, 0) : `${fmtPct(choice.probability, 0)} confident`,
              ),
            ),
            el(
              "div",
              { class: "meter", "aria-hidden": "true" },
              el("span", { style: { width: `${choice.probability * 100}%` } }),
            ),
          ),
        ),
      );
    } else {
      guess.replaceChildren(
        el(
          "p",
          { class: "muted" },
          next.round_id === null
            ? "No model yet: images come in random order until the first round is trained."
            : "The model made no prediction for this image.",
        ),
      );
    }

    const facts = [
      [
        "Chosen by",
        next.round_id === null && next.strategy === "random" ? "Random order" : strategyName(next.strategy),
      ],
      ["Score", scoreText(next)],
      ["Rank in queue", next.rank === null ? "–" : `#${next.rank + 1}`],
      ["Round", next.round_id === null ? "none yet" : `#${next.round_id}`],
    ];
    why.replaceChildren(
      ...facts.map(([term, value]) => el("div", {}, el("dt", {}, term), el("dd", {}, value))),
    );
    $("#why-reason").textContent = next.reason || "";
  }

  // --- actions -------------------------------------------------------------------------

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
  }

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
  }

  flash(index) {
    const button = document.querySelector(`.class-btn[data-index="${index}"]`);
    if (!button) return;
    button.classList.add("flash");
    setTimeout(() => button.classList.remove("flash"), 140);
  }

  label(index) {
    const entry = this.current;
    if (!entry || entry.shownAt === null || entry.shownAt === undefined) return; // not on screen yet
    const label = this.classes[index];
    const msSpent = Math.min(Math.round(performance.now() - entry.shownAt), 86_400_000);
    this.flash(index);
    this.advance(); // first: the next image must not wait for anything below
    this.confirm(label);
    const op = this.outbox.enqueue({ kind: "label", item_id: entry.id, label, ms_spent: msSpent });
    this.remember({ entry, kind: "label", opId: op.id, label });
    this.lastAction(`Labelled item ${entry.id} as “${label}”`);
  }

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
  }

  skip() {
    const entry = this.current;
    if (!entry) return;
    this.advance();
    const op = this.outbox.enqueue({ kind: "skip", item_id: entry.id });
    this.remember({ entry, kind: "skip", opId: op.id });
    this.confirm("Skipped", "skip");
    this.lastAction(`Skipped item ${entry.id}`);
  }

  undo() {
    const last = this.history.pop();
    if (!last) {
      this.lastAction("Nothing to undo");
      return;
    }
    // Not sent yet: just drop it. Sent (or being sent): queue its undo behind it.
    const cancelled = this.outbox.cancel(last.opId);
    if (!cancelled)
      this.outbox.enqueue({ kind: last.kind === "label" ? "undo" : "unskip", item_id: last.entry.id });
    this.doneIds.delete(last.entry.id);
    if (this.current) this.buffer.unshift(this.current);
    this.show(last.entry);
    this.lastAction(
      last.kind === "label"
        ? `Undid “${last.label}” on item ${last.entry.id}`
        : "Back to the skipped image",
    );
    this.renderProgress();
  }

  remember(action) {
    this.doneIds.add(action.entry.id);
    this.history.push(action);
    while (this.history.length > HISTORY_LIMIT) this.history.shift().entry.release();
  }

  lastAction(text) {
    $("#last-action").textContent = text;
  }

  // --- progress and new models ---------------------------------------------------------

  async pollMetrics() {
    if (!this.metricsAllowed) return;
    try {
      const ackedBefore = this.ackedDelta;
      const metrics = await api.get(`/projects/${this.project.id}/metrics`);
      this.ackedDelta -= ackedBefore; // the fresh numbers include what was acknowledged before
      this.metrics = metrics;
      this.checkNewModel(metrics.queue);
      this.renderProgress();
    } catch (error) {
      if (error instanceof api.ApiError && error.status === 403) this.metricsAllowed = false;
    }
  }

  pollSoon() {
    clearTimeout(this.pollTimer);
    this.pollTimer = setTimeout(() => this.pollMetrics(), 2000);
  }

  checkNewModel(queue) {
    const roundId = queue.round_id;
    const isNew = this.knownRoundId !== undefined && roundId !== null && roundId !== this.knownRoundId;
    this.knownRoundId = roundId;
    if (!isNew) return;
    toast(`New model from round ${roundId}: the next images are chosen by it.`, "success", 7000);
    $("#model-title").textContent = `Model · round ${roundId}`;
    this.reorderFor = roundId;
    this.refill();
  }

  /** Label count change made here that the last metrics can't show yet. */
  localDelta() {
    let delta = this.ackedDelta;
    for (const op of this.outbox.pending()) {
      if (op.kind === "label") delta += 1;
      else if (op.kind === "undo") delta -= 1;
    }
    return delta;
  }

  renderProgress() {
    const metrics = this.metrics;
    if (!metrics) return;
    const delta = this.localDelta();
    const mine = metrics.annotators.find((row) => row.annotator_id === this.me.id);
    $("#stat-today").textContent = fmtInt(Math.max(0, (mine ? mine.labels_today : 0) + delta));
    const labelled = Math.max(0, metrics.totals.labelled + delta);
    const pool = metrics.totals.pool;
    $("#stat-labelled").textContent = `${fmtInt(Math.min(labelled, pool))} / ${fmtInt(pool)}`;
    $("#labelled-meter").style.width = pool ? `${Math.min(100, (100 * labelled) / pool)}%` : "0";
    const queue = metrics.queue;
    const retrain = $("#retrain");
    if (queue.active_round_id !== null && ["queued", "running"].includes(queue.active_round_status)) {
      retrain.textContent = `Round ${queue.active_round_id} is ${queue.active_round_status}: a new model is on its way.`;
    } else if (queue.pool_exhausted) {
      retrain.textContent = "Every image in the pool is labelled.";
    } else {
      const left = Math.max(0, queue.labels_until_retrain - Math.max(0, delta));
      retrain.textContent = left
        ? `${plural(left, "label")} until the next model.`
        : "Enough new labels: the next model is due.";
    }
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

/** The raw score, and where it stands in its round: "0.412 · top 3%". */
function scoreText(next) {
  if (next.score === null) return "–";
  const raw = fmtNum(next.score);
  const percentile = next.score_percentile;
  if (percentile === null || percentile === undefined) return raw;
  const top = Math.max(0.1, 100 - percentile);
  return `${raw} · top ${top < 1 ? top.toFixed(1) : Math.round(top)}% of its round`;
}

async function main() {
  const ready = await session.start();
  if (!ready) return;
  new Labeller(ready).start();
}

main().catch((error) => {
  showBanner(`Something went wrong: ${error.message}`);
  throw error;
});
