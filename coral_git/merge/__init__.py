"""Three-way merges of model files: the plan (``plan``: every tensor decided from pointers alone),
strategies, the data model and container interface (``model``), per-format containers (``containers/``), the
merged bytes (``pieces``, ``write``), settings, conflict reports, git's merge driver and ``resolve``. May import
``filter``, ``git``, ``store``, ``formats`` and the ground floor; never ``diffs``, ``remote``, ``maintenance`` or
anything above.
"""
