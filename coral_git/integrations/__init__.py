"""Training integrations: the torch-free checkpoint core (``checkpoints``: commit files to a branch, list,
restore) and thin torch, Lightning and transformers adapters. Each adapter imports its framework; this package
imports none. ``coral_git.integrations.torch`` is a public import path. May import the engines (diffs, merge,
remote, maintenance), git, filter, store and the ground floor; never ``api``, ``commands`` or ``cli``.
"""
