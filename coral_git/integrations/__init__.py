"""Training-framework integrations. Each submodule imports its framework; this package imports none."""
