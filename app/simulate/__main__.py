"""``python -m app.simulate``: the simulate command without the rest of the CLI."""

from app.simulate.cli import main

main()
