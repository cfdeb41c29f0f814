"""What a test does when a service it needs is missing: skipped here, a failure under CI=true."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def unavailable(message: str, what: str) -> NoReturn:
    """Skip with ``message``; under CI=true fail instead (a missing ``what`` is a failure there)."""
    if in_ci():
        pytest.fail(f"{message} [CI=true: a missing {what} is a failure]", pytrace=False)
    pytest.skip(message)
