"""``python -m simulate``: the simulate command without the rest of the CLI."""

from simulate.cli import main

main()
