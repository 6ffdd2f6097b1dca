"""`python -m app.cli`: the `nextlabel` command."""

from app.cli import main

main()
