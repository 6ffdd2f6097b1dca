"""Which key labels which class on the labelling page: one assignment, computed here.

The API serves it (`effective_hotkeys` in a project's JSON), so the page and every other
client use the same keys. A class may have a key an admin set (`Project.hotkeys`); a class
whose name is one character that is free gets that key, so on a digits project key 0 labels
"0"; the rest get the free keys of `AUTO_KEYS` in class order. Classes past the last free key
have none (they are labelled by click or tap).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

# Keys the labelling page uses for its own actions (frontend/js/keys.js): never a class's.
# Backspace (undo) is not one character, so no class key can collide with it.
RESERVED_KEYS: Mapping[str, str] = {" ": "skip (Space)", "s": "skip"}
# Keys handed out automatically, in this order.
AUTO_KEYS: tuple[str, ...] = tuple(
    key for key in "1234567890abcdefghijklmnopqrstuvwxyz" if key not in RESERVED_KEYS
)


def normalise_key(key: str) -> str:
    """Keys are matched case-insensitively (the page lower-cases a pressed letter)."""
    return key.lower()


def hotkey_problems(classes: Sequence[str], hotkeys: Mapping[str, str]) -> list[str]:
    """What is wrong with an admin's class → key map, one sentence each; [] when it is fine."""
    problems: list[str] = []
    known = set(classes)
    owners: dict[str, str] = {}
    for name, key in hotkeys.items():
        if name not in known:
            problems.append(f"{name!r} is not one of the project's classes")
        if len(key) != 1:
            problems.append(f"the key for {name!r} must be one character, not {key!r}")
            continue
        if not key.isprintable() or key.isspace():
            problems.append(f"the key for {name!r} must be a visible character, not {key!r}")
            continue
        key = normalise_key(key)
        if key in RESERVED_KEYS:
            problems.append(f"{key!r} (for {name!r}) is the page's key for {RESERVED_KEYS[key]}")
        elif key in owners:
            problems.append(f"{key!r} is given to both {owners[key]!r} and {name!r}")
        else:
            owners[key] = name
    return problems


def effective_hotkeys(classes: Sequence[str], hotkeys: Mapping[str, str]) -> dict[str, str]:
    """Class → key for every class that has one, in class order.

    `hotkeys` (an admin's, already valid) win; then a one-character class name takes its own
    key while it is free; then the remaining classes take the free `AUTO_KEYS` in order.
    """
    chosen = {name: normalise_key(key) for name, key in hotkeys.items() if name in classes}
    taken = set(chosen.values()) | set(RESERVED_KEYS)
    for name in classes:
        own = normalise_key(name)
        if name not in chosen and len(name) == 1 and own.isprintable() and own not in taken:
            chosen[name] = own
            taken.add(own)
    free = iter(key for key in AUTO_KEYS if key not in taken)
    for name in classes:
        if name not in chosen:
            key = next(free, None)
            if key is None:
                break
            chosen[name] = key
    return {name: chosen[name] for name in classes if name in chosen}
