// The near-duplicates panel: each flagged item beside the earlier image it resembles, with
// their cosine distance and whether the project skips it (never queued or trained on) or
// only flags it. The list is GET /projects/{pid}/items?status=near_duplicate, a page at a
// time ("Show more"); it is fetched again only when the counts change, not on every poll.
// The Images tile links here with the count.

import * as api from "../api.js";
import { $, el, fmtInt, plural } from "../ui.js";
import { Thumbs } from "./thumbs.js";

const PAGE = 24;

export class DuplicatesPanel {
  shownFor = null; // the counts the list was fetched for
  cursor = null;
  thumbs = new Thumbs();

  bind(board) {
    this.board = board;
    $("#duplicates-more").addEventListener("click", () => this.loadPage());
  }

  /** `totals` is the metrics' counts: near_duplicates and duplicates_skipped. */
  async render(totals) {
    const count = totals.near_duplicates || 0;
    $("#duplicates-panel").hidden = count === 0;
    const key = `${this.board.pid}:${count}:${totals.duplicates_skipped || 0}`;
    if (key === this.shownFor) return;
    this.shownFor = key;
    const skipped = totals.duplicates_skipped || 0;
    $("#duplicates-note").textContent = skipped
      ? `${plural(count, "item")} · ${fmtInt(skipped)} skipped`
      : plural(count, "item");
    this.thumbs.clear();
    $("#duplicates").replaceChildren();
    this.cursor = null;
    if (count) await this.loadPage();
  }

  async loadPage() {
    const params = new URLSearchParams({ status: "near_duplicate", limit: String(PAGE) });
    if (this.cursor !== null) params.set("cursor", String(this.cursor));
    const page = await api.get(`/projects/${this.board.pid}/items?${params}`);
    this.cursor = page.next_cursor;
    $("#duplicates-more").hidden = page.next_cursor === null;
    const thumbs = [];
    $("#duplicates").append(...page.items.map((item) => pairRow(item, thumbs)));
    await this.thumbs.load(thumbs);
  }
}

/** One <li>: the item, "≈", the item it resembles, then distance and policy. */
function pairRow(item, thumbs) {
  const name = item.filename || `item ${item.id}`;
  const original = item.near_duplicate_of;
  const distance =
    typeof item.near_duplicate_distance === "number" ? item.near_duplicate_distance.toFixed(3) : "–";
  return el(
    "li",
    { dataset: { item: item.id, of: original, skipped: item.duplicate_skipped ? "true" : "false" } },
    el(
      "div",
      { class: "pair" },
      figure(item.id, name, `Near duplicate ${name}`, item.image_url, thumbs),
      el("span", { class: "resembles", "aria-label": "resembles" }, "≈"),
      figure(original, `item ${original}`, `Earlier item ${original}`, `/items/${original}/image`, thumbs),
    ),
    el(
      "p",
      { class: "pair-facts" },
      el("span", { class: "distance", title: "cosine distance of their embeddings" }, `distance ${distance}`),
      el(
        "span",
        // Flagged items still go to annotators (the colour of work to do); skipped ones do not.
        { class: "badge", dataset: item.duplicate_skipped ? {} : { status: "queued" } },
        item.duplicate_skipped ? "skipped" : "flagged",
      ),
    ),
  );
}

function figure(id, caption, alt, path, thumbs) {
  const img = el("img", { alt });
  thumbs.push([img, path]);
  return el(
    "figure",
    { dataset: { item: id }, title: caption },
    el("div", { class: "thumb" }, img),
    el("figcaption", {}, caption),
  );
}
