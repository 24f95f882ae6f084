"""od-runs: a local daemon that runs coding agents and lets everyone watch them."""

__version__ = "0.1.0"
