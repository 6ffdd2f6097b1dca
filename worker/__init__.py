"""nextlabel's worker: the Celery app, the round pipeline and everything that needs torch."""

import os

# Idle OpenMP threads spin by default; on a CPU shared with the API (the laptop default) that
# slowed torch 5-20x in our measurements. Set before any worker module imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
