// An embedding space's key in a few characters, for the rounds table and the embedding panel
// (the full key goes in their titles). A key names the backbone, its weights' digest and the
// preprocessing, "efficientnet_lite0/sha256:0123…/224px/c3/bilinear/mean=…/std=…/v1"
// (worker/engine/backbones.py:space_key); imported vectors have "imported/project-7". The
// short form keeps what tells two spaces apart at a glance: the model, 8 digest characters,
// the input size and channels. A key of another shape is shown as it is, cut to fit.

const MAX_PLAIN = 40;
const DIGEST = "sha256:";

/** `unless`: a model name the reader already sees beside it, left out of the short form. */
export function shortSpace(key, { unless = null } = {}) {
  if (!key) return "–";
  const parts = key.split("/");
  const digest = parts.find((part) => part.startsWith(DIGEST));
  if (!digest) return key.length > MAX_PLAIN ? `${key.slice(0, MAX_PLAIN - 1)}…` : key;
  const input = parts.filter((part) => /^\d+px$/.test(part) || /^c\d$/.test(part)).join(" ");
  const model = parts[0] === unless ? null : parts[0];
  return [model, digest.slice(DIGEST.length, DIGEST.length + 8), input].filter(Boolean).join(" · ");
}
