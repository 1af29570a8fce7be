"""``python -m fluxmail`` runs the CLI."""

from fluxmail.cli import main

main()
