"""Everything coral asks of git itself: the Repo (paths, coral settings, its store), the one ``git()``
subprocess wrapper, ``git coral init``'s config/.gitattributes/hooks (``install``), and reachability (every
pointer reachable from refs, reflogs, index, stash, worktrees). May import ``store``, ``formats`` and the ground
floor; never ``filter`` or anything above.
"""
