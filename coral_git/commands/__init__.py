"""CLI command groups: every module here with a ``register(app)`` function adds its commands.

Modules must import heavy dependencies inside their command functions, so that ``git coral -h``
and the filter stay quick to start.
"""
