"""djust_resumable: resumable, multi-worker, multi-gigabyte uploads for djust LiveView."""

__version__ = "0.1.0"


def __getattr__(name: str):  # lazy: importing the package must not need Django settings
    if name == "UploadMixin":
        from .mixin import UploadMixin

        return UploadMixin
    raise AttributeError(name)
