"""One round, phase by phase: run (the spine), data, model, plan, write."""
