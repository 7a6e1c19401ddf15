"""djust_resumable: resumable, multi-worker, multi-gigabyte uploads for djust LiveView."""

__version__ = "0.1.0"
