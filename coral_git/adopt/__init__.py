"""What git-lfs users expect to find: ls-files, status, env, uninstall (library side of the commands)."""
