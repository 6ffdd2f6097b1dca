// Small DOM helpers shared by both pages: element builder, toasts, the connection banner
// and number formatting. No framework: the pages are small enough to render by hand.

/** el("button", {class: "btn", onclick}, "text", child) → HTMLElement */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") {
      node.addEventListener(name.slice(2), value);
    } else if (name === "class") {
      node.className = value;
    } else if (name === "dataset") {
      Object.assign(node.dataset, value);
    } else if (name === "style" && typeof value === "object") {
      Object.assign(node.style, value);
    } else if (value === true) {
      node.setAttribute(name, "");
    } else {
      node.setAttribute(name, String(value));
    }
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function $(selector, root = document) {
  return root.querySelector(selector);
}

export function toast(message, kind = "info", ms = 4000) {
  let box = $("#toasts");
  if (!box) {
    box = el("div", { id: "toasts", class: "toasts", role: "status", "aria-live": "polite" });
    document.body.append(box);
  }
  const node = el("div", { class: "toast", dataset: { kind } }, message);
  box.append(node);
  setTimeout(() => node.remove(), ms);
  return node;
}

/** The strip under the top bar that says plainly when the server is unreachable. */
export function showBanner(message, kind = "error") {
  const banner = $("#banner");
  banner.dataset.kind = kind;
  banner.replaceChildren(...(Array.isArray(message) ? message : [message]));
  banner.hidden = false;
}

export function hideBanner() {
  $("#banner").hidden = true;
}

const integer = new Intl.NumberFormat(undefined, { maximumFractionDigits: 0 });

export function fmtInt(value) {
  return value === null || value === undefined ? "–" : integer.format(value);
}

export function fmtPct(value, digits = 1) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(digits)}%`;
}

export function fmtNum(value, digits = 3) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  return Math.abs(value) >= 100 ? value.toFixed(0) : value.toPrecision(digits);
}

export function fmtSeconds(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(1)} s`;
  return `${Math.floor(seconds / 60)} min ${Math.round(seconds % 60)} s`;
}

export function fmtTime(iso) {
  if (!iso) return "–";
  const date = new Date(iso);
  return date.toLocaleString(undefined, {
    month: "short",
    day: "numeric",
    hour: "2-digit",
    minute: "2-digit",
  });
}

export function plural(count, one, many = `${one}s`) {
  return `${fmtInt(count)} ${count === 1 ? one : many}`;
}

/**
 * The server's catalog (GET /catalog, core/catalog.py): every strategy, network, cold start
 * and round phase with the name people read. Loaded once at sign-in (session.start), so no
 * list is kept here.
 */
const catalog = { strategies: [], networks: [], cold_starts: [], phases: [] };

export function setCatalog({ strategies, networks = [], cold_starts = [], phases }) {
  catalog.strategies = strategies;
  catalog.networks = networks;
  catalog.cold_starts = cold_starts;
  catalog.phases = phases;
}

export const strategies = () => catalog.strategies;
export const networks = () => catalog.networks;
export const coldStarts = () => catalog.cold_starts;
export const phases = () => catalog.phases;

const labelIn = (entries, id) => entries.find((entry) => entry.name === id)?.label || id;

/** A queue's strategy: an acquisition strategy, or the cold start of a round without a model. */
export function strategyName(id) {
  return labelIn([...catalog.strategies, ...catalog.cold_starts], id);
}

export const networkName = (id) => labelIn(catalog.networks, id);
