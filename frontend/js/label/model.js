// The model panel: the current model's guess for the image on stage (its top classes with
// their confidence, and the matching class button marked), "Why this image?" (strategy,
// score, rank, round, reason), and the switch to a new model when a round finishes.
//
// Owns #guess, #why, #why-reason, #model-title, and `knownRoundId`.

import { $, el, fmtNum, fmtPct, strategyName, toast } from "../ui.js";

export const model = {
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
  },

  checkNewModel(queue) {
    const roundId = queue.round_id;
    const isNew = this.knownRoundId !== undefined && roundId !== null && roundId !== this.knownRoundId;
    this.knownRoundId = roundId;
    if (!isNew) return;
    toast(`New model from round ${roundId}: the next images are chosen by it.`, "success", 7000);
    $("#model-title").textContent = `Model · round ${roundId}`;
    this.reorderFor = roundId;
    this.refill();
  },
};

/** The raw score, and where it stands in its round: "0.412 · top 3%". */
function scoreText(next) {
  if (next.score === null) return "–";
  const raw = fmtNum(next.score);
  const percentile = next.score_percentile;
  if (percentile === null || percentile === undefined) return raw;
  const top = Math.max(0.1, 100 - percentile);
  return `${raw} · top ${top < 1 ? top.toFixed(1) : Math.round(top)}% of its round`;
}
