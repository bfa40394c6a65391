"""Comparing model files tensor by tensor: views of stored tensors, value statistics, records
(``tensordiff``), the text table and git's external diff driver (``driver``), and textconv. Named ``diffs``
because ``coral_git.diff`` is the public API function. May import ``filter``, ``git``, ``store``, ``formats``
and the ground floor; never ``merge``, ``remote``, ``maintenance`` or anything above.
"""
