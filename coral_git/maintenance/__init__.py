"""The store's lifecycle: gc (mark from reachability, sweep, repack), fsck and stats. May import ``filter``,
``git``, ``store`` and the ground floor; never ``diffs``, ``merge``, ``remote`` or anything above.
"""
