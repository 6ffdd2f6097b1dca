"""nextlabel's worker, everything that needs torch: the Celery app, one round phase by phase
(worker.round) and the engine (worker.engine)."""

import os

# Idle OpenMP threads spin by default; on a CPU shared with the API (the laptop default) that
# slowed torch 5-20x in our measurements. Set before any worker module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
