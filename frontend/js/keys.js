// Hotkeys of the labelling page. Which key labels which class is the server's decision
// (core/hotkeys.py): the project's `effective_hotkeys`, class → key, so the page and every
// other client agree. A class named with one character gets that key (digits 0–9 on keys
// 0–9), an admin may set others, the rest get 1–9, 0, a–z in class order. Space or s skips,
// Backspace undoes: those keys are never a class's (the server refuses them).

/** key → class index, from the project's class → key map. */
export function classKeyMap(classes, hotkeys) {
  const map = new Map();
  classes.forEach((name, index) => {
    const key = hotkeys?.[name];
    if (key) map.set(key.toLowerCase(), index);
  });
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
