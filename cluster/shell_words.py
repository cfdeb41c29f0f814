"""The words bash itself runs: its builtins and reserved words (keywords), as data.

A command job's ``command[0]`` is a program. The rendered script starts it with ``exec --``,
which never runs a function, a builtin or a keyword, but bash's ``exec`` would then look for a
*program* named ``eval`` -- and the local executor's ``execvp`` the same. Rather than leave
``command: [echo, hi]`` to depend on whether ``/bin/echo`` exists, ``cluster check`` refuses
these names as ``command[0]`` (write the program's path, ``/bin/echo``, when that is meant).

Generated from bash 5.2's ``compgen -b`` and ``compgen -k`` (tests/command compares them
with the bash on the machine, so that a newer bash's additions are noticed).
"""

from __future__ import annotations

BASH_BUILTINS = frozenset("""
. : [ alias bg bind break builtin caller cd command compgen complete compopt continue declare
dirs disown echo enable eval exec exit export false fc fg getopts hash help history jobs kill let
local logout mapfile popd printf pushd pwd read readarray readonly return set shift shopt source
suspend test times trap true type typeset ulimit umask unalias unset wait
""".split())
"""``compgen -b``: the commands bash runs itself, whatever programs ``PATH`` holds."""

BASH_KEYWORDS = frozenset("""
if then else elif fi case esac for select while until do done in function time { } ! [[ ]] coproc
""".split())
"""``compgen -k``: bash's reserved words."""


def shell_word_kind(name: str) -> str | None:
    """``"a shell keyword"`` or ``"a shell builtin"`` when bash would not run ``name`` as a
    program found on ``PATH``; None for a program name (or any path: a word with a ``/``
    is always run as that file, by bash and by ``execvp`` alike)."""
    if name in BASH_KEYWORDS:
        return "a shell keyword"
    if name in BASH_BUILTINS:
        return "a shell builtin"
    return None
