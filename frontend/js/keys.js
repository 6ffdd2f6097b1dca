// Hotkeys of the labelling page: classes get 1–9, 0, then letters; space or s skips;
// backspace undoes. Letters that already mean something (s = skip) are never given to a
// class, and classes past the last free key are reachable by click or tap only.

const DIGITS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"];
const RESERVED = new Set(["s"]);
const LETTERS = [..."abcdefghijklmnopqrstuvwxyz"].filter((letter) => !RESERVED.has(letter));

export const CLASS_KEYS = [...DIGITS, ...LETTERS];

/** The hotkey of the class at `index`, or null when it has none. */
export function keyForClass(index) {
  return index < CLASS_KEYS.length ? CLASS_KEYS[index] : null;
}

/** key → class index, for the first `count` classes. */
export function classKeyMap(count) {
  const map = new Map();
  for (let index = 0; index < Math.min(count, CLASS_KEYS.length); index += 1) {
    map.set(CLASS_KEYS[index], index);
  }
  return map;
}

function isTyping(target) {
  if (!(target instanceof HTMLElement)) return false;
  return target.isContentEditable || ["INPUT", "SELECT", "TEXTAREA"].includes(target.tagName);
}

/**
 * What a keydown means on the labelling page:
 * {type: "label", index} | {type: "skip"} | {type: "undo"} | null (not ours).
 */
export function actionForKey(event, keyMap) {
  if (event.ctrlKey || event.metaKey || event.altKey || isTyping(event.target)) return null;
  const key = event.key.length === 1 ? event.key.toLowerCase() : event.key;
  if (key === " " || key === "s") return { type: "skip" };
  if (key === "Backspace") return { type: "undo" };
  if (keyMap.has(key)) return { type: "label", index: keyMap.get(key) };
  return null;
}

/** How a key is drawn on its button. */
export function keyCaption(key) {
  return { " ": "Space", Backspace: "⌫" }[key] || key.toUpperCase();
}
