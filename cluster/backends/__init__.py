"""The scheduler backends (being assembled): see base.py."""

from cluster.backends.base import JobInfo

__all__ = ["JobInfo"]
