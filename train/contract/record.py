"""The base of the spec's frozen dataclasses: equality, hash and repr by field values.

``@dataclass(frozen=True)`` generates ``__eq__``, ``__hash__`` and ``__repr__`` for each class
by compiling their source when the class is defined, which the login path pays for at every
start (it defines fifteen such classes; the three methods are a third of their cost). A class
declared ``@dataclass(frozen=True, eq=False, repr=False)`` over :class:`Record` gets the same
three methods, written once here. Standard library only.
"""

from __future__ import annotations

import dataclasses
import reprlib
from typing import Any


def _values(record: Any) -> tuple:
    return tuple(getattr(record, f.name) for f in dataclasses.fields(record) if f.compare)


class Record:
    """What ``@dataclass(frozen=True)`` would generate: instances of the same class are equal
    when their fields are, hash by their fields, and show as ``Name(field=value, ...)``."""

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return _values(self) == _values(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(_values(self))

    @reprlib.recursive_repr()
    def __repr__(self) -> str:
        fields = ", ".join(f"{f.name}={getattr(self, f.name)!r}" for f in dataclasses.fields(self) if f.repr)
        return f"{self.__class__.__qualname__}({fields})"
