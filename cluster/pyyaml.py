"""PyYAML, imported without compiling its regular expressions up front.

``import yaml`` compiles a dozen regular expressions as class attributes: the pure-Python
reader's ``NON_PRINTABLE`` (a negated set up to U+10FFFF, most of the cost), the resolver's
implicit types, the constructor's timestamp. That is about a tenth of a login command's time,
mostly for patterns it never uses (specs are parsed by libyaml's C parser where PyYAML has it).
While PyYAML's own modules are imported here, ``re.compile`` called from them returns a
pattern compiled on its first use; every other caller gets ``re.compile`` itself.

Use ``from cluster.pyyaml import yaml`` instead of ``import yaml`` on the login path.
"""

from __future__ import annotations

import re
import sys

_PATTERN_ATTRIBUTES = ("match", "search", "fullmatch", "sub", "subn", "split", "findall", "finditer",
                       "scanner", "pattern", "flags", "groups", "groupindex")


class _PatternOnFirstUse:
    """Stands for ``re.compile(pattern, flags)`` and compiles it when first used: then copies
    the compiled pattern's methods and attributes onto itself, so later calls go straight to
    them."""

    def __init__(self, pattern: str, flags: int) -> None:
        self._source = (pattern, flags)

    def __getattr__(self, name: str):
        compiled = re.compile(*self.__dict__["_source"])
        for attribute in _PATTERN_ATTRIBUTES:
            setattr(self, attribute, getattr(compiled, attribute))
        return getattr(compiled, name)

    def __repr__(self) -> str:
        return f"re.compile({self._source[0]!r}, {self._source[1]!r}) on first use"


def _import_yaml():
    if "yaml" in sys.modules:
        return sys.modules["yaml"]
    compile_now = re.compile

    def compile_from_yaml_on_first_use(pattern, flags=0):
        caller = sys._getframe(1).f_globals.get("__name__", "")
        if isinstance(pattern, str) and (caller == "yaml" or caller.startswith("yaml.")):
            return _PatternOnFirstUse(pattern, flags)
        return compile_now(pattern, flags)

    re.compile = compile_from_yaml_on_first_use
    try:
        import yaml
    finally:
        re.compile = compile_now
    return yaml


yaml = _import_yaml()
