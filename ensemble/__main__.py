"""``python -m ensemble`` runs the CLI."""
from .cli import main

main()
