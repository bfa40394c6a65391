"""Chunk objects on other machines: backends (path, S3), fetching what a checkout needs, push and the
pre-push hook step. May import ``filter``, ``git``, ``store`` and the ground floor; never ``diffs``, ``merge``,
``maintenance`` or anything above.
"""
