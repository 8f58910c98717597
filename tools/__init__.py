"""Command-line interface: ``python -m tools <command>``, a thin layer over exporter/, calibrators/, engines/."""
