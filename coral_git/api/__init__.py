"""The Python API (``coral_git.open``, ``open_file``, ``diff``, ``history``, ``load_torch``): model files at any
revision as tensors, numpy and zarr arrays. May import every engine (``diffs``, ``merge``, ``remote``,
``maintenance``) and below; never ``integrations``, ``commands`` or ``cli``.
"""
