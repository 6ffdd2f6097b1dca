"""What the API (app/) and the worker (worker/) share, with neither web nor torch: settings,
the database and its tables, image storage, logging, the catalog of strategies, networks
and phases, the typed round report, the round lifecycle and the broker seam.

app/ and worker/ both import core/; neither imports the other (import-linter contracts in
pyproject.toml).
"""
