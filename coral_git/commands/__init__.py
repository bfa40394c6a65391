"""CLI command groups: every module here with a ``register(app)`` function adds its commands.

Thin by rule: parse arguments, call the library, print. Modules import heavy dependencies inside their
command functions, so that ``git coral -h`` and the filter stay quick to start. May import everything
below (api, integrations, the engines, git, store…); only ``coral_git.cli`` imports this package.
"""
