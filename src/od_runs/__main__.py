"""`python -m od_runs` is the od-runs command."""

from .cli import main

main()
