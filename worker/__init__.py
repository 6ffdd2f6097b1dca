"""nextlabel's worker: the Celery app, the active-learning pipeline and everything that needs torch."""
