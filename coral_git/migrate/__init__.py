"""Converting histories between git-lfs (or plain blobs) and coral pointers: ``git coral migrate``."""
