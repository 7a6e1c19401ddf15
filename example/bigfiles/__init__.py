"""A big-files page: several files per slot, per-file progress, the stored files listed."""
