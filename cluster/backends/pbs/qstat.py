"""Read what ``qstat`` prints: one call covers every watched job.

* PBS Pro / OpenPBS: ``qstat -x -f -F json ID...`` (``-x`` keeps finished jobs
  in view while the server holds their history).
* Torque, and Slurm's Torque wrapper (package slurm-wlm-torque): ``qstat -f ID...``,
  blocks that start ``Job Id: ID`` followed by indented ``key = value`` lines.

Both parsers return ``{job id as printed: {attribute: value}}`` with nested
attributes flattened the way the text format spells them
(``Resource_List.walltime``) and every value a string.

``unknown_job_ids`` reads qstat's stderr for the jobs it says it no longer
knows ("left history"), so the watcher can tell them from a failed call.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

from cluster.backends.pbs.jobid import PBSOutputError
from cluster.backends.pbs.states import Flavor

__all__ = [
    "parse_qstat_json",
    "parse_qstat_text",
    "qstat_command",
    "unknown_job_ids",
]

# Attributes whose content is the job's environment: large, user-controlled, and
# the usual source of invalid JSON. Nothing here needs them.
_SKIPPED = ("Variable_List",)


def qstat_command(flavor: Flavor, job_ids: Iterable[str]) -> list[str]:
    """The single qstat call that reports on all ``job_ids`` (as qstat spells them)."""
    ids = list(job_ids)
    if flavor == "pbspro":
        return ["qstat", "-x", "-f", "-F", "json", *ids]
    if flavor == "torque":
        return ["qstat", "-f", *ids]
    raise ValueError(f"unknown PBS flavor {flavor!r}; expected 'pbspro' or 'torque'")


# ---------------------------------------------------------------- PBS Pro JSON

# One `"key": value,` line of PBS Pro's pretty-printed JSON.
_JSON_MEMBER = re.compile(r'^(?P<head>\s*"(?:[^"\\]|\\.)*"\s*:\s*)(?P<value>.*?)(?P<comma>,?)\s*$')
_VALID_ESCAPE = re.compile(r'\\(["\\/bfnrt]|u[0-9a-fA-F]{4})')


def _as_json_string(raw: str) -> str:
    """Re-encode a value PBS printed badly: keep valid escapes, make stray backslashes literal."""
    inner = raw[1:-1] if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"') else raw
    pieces: list[str] = []
    pos = 0
    for match in _VALID_ESCAPE.finditer(inner):
        pieces.append(inner[pos : match.start()])
        pieces.append(json.loads(f'"{match.group(0)}"'))
        pos = match.end()
    pieces.append(inner[pos:])
    return json.dumps("".join(pieces))


def _repair_json(text: str) -> str:
    """Fix, line by line, the member values that are not valid JSON.

    Known cases (openpbs/openpbs issues #830, #1255, PR #2049): environment
    values with ``\\'`` or ``\\,`` escapes, unescaped double quotes, and unquoted
    numbers with leading zeros (``"foo":005``). PBS prints one member per line,
    so each bad value is turned into a JSON string of what was printed.
    """
    fixed: list[str] = []
    for line in text.splitlines():
        match = _JSON_MEMBER.match(line)
        value = match.group("value").strip() if match else ""
        if match and value and value not in ("{", "[", "{}", "[]"):
            try:
                json.loads(value)
            except ValueError:
                line = f"{match.group('head')}{_as_json_string(value)}{match.group('comma')}"
        fixed.append(line)
    return "\n".join(fixed)


def _flatten(attrs: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for name, value in attrs.items():
        if not prefix and name in _SKIPPED:
            continue
        key = f"{prefix}{name}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, prefix=f"{key}."))
        elif isinstance(value, list):
            flat[key] = ",".join(str(v) for v in value)
        else:
            flat[key] = str(value)
    return flat


def parse_qstat_json(text: str | bytes) -> dict[str, dict[str, str]]:
    """Parse ``qstat -f -F json`` (PBS Pro / OpenPBS), tolerating its known JSON bugs.

    Text before the first ``{`` or after the last ``}`` (warnings some versions
    print on stdout) is ignored. Raises ``PBSOutputError`` when even the
    repaired text is not JSON.
    """
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        if not text.strip():
            return {}
        raise PBSOutputError("qstat -F json printed no JSON object", text)
    body = text[start : end + 1]
    try:
        data = json.loads(body, strict=False)
    except ValueError:
        try:
            data = json.loads(_repair_json(body), strict=False)
        except ValueError as error:
            raise PBSOutputError(f"qstat -F json printed invalid JSON ({error})", text) from None
    jobs = (data.get("Jobs") or {}) if isinstance(data, dict) else None
    if not isinstance(jobs, dict):
        raise PBSOutputError('qstat -F json: "Jobs" is not an object', text)
    return {job_id: _flatten(attrs) for job_id, attrs in jobs.items() if isinstance(attrs, Mapping)}


# ---------------------------------------------------------------- Torque text

_JOB_HEADER = re.compile(r"^Job Id:\s*(?P<id>\S+)\s*$")
_ATTRIBUTE = re.compile(r"^(?P<indent>\s+)(?P<name>[A-Za-z_][\w.-]*) = ?(?P<value>.*)$")


def parse_qstat_text(text: str | bytes) -> dict[str, dict[str, str]]:
    """Parse ``qstat -f`` text (Torque, PBS Pro without ``-F json``, Slurm's wrapper).

    A block starts at ``Job Id: ID`` (Slurm's wrapper puts a tab after the
    colon). Attribute lines are indented (four spaces in Torque and PBS Pro,
    one tab in Slurm's wrapper); a long value continues on lines indented with
    a tab, which are glued on as printed (PBS cuts values at a fixed width).
    The first attribute line fixes the block's attribute indentation, so a
    continuation is any other indented line.
    """
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    jobs: dict[str, dict[str, str]] = {}
    attrs: dict[str, str] | None = None
    indent: str | None = None
    last: str | None = None
    for line in text.splitlines():
        header = _JOB_HEADER.match(line)
        if header:
            attrs = jobs.setdefault(header.group("id"), {})
            indent, last = None, None
            continue
        if attrs is None or not line.strip():
            continue
        match = _ATTRIBUTE.match(line)
        if match and (indent is None or match.group("indent") == indent):
            indent = match.group("indent")
            last = match.group("name")
            attrs[last] = match.group("value").rstrip()
        elif last is not None and line[:1].isspace():
            attrs[last] += line[1:].rstrip() if line.startswith("\t") else line.strip()
    for attrs_ in jobs.values():
        for name in _SKIPPED:
            attrs_.pop(name, None)
    return jobs


# ---------------------------------------------------------------- stderr

_UNKNOWN = re.compile(r"Unknown Job Id(?: Error)?\s+(?P<id>[^\s,]+)", re.IGNORECASE)
_HISTORY = re.compile(r"qstat:\s+(?P<id>\S+)\s+Job has finished", re.IGNORECASE)


def unknown_job_ids(stderr: str | bytes) -> set[str]:
    """Ids qstat says it does not know (any more), from its stderr.

    PBS Pro and Torque print ``qstat: Unknown Job Id ID`` (Torque 4+:
    ``Unknown Job Id Error ID``); PBS Pro without ``-x`` prints
    ``qstat: ID Job has finished, use -x or -H ...``. Slurm's wrapper prints
    nothing at all (and exits 153 when none of the ids is known).
    """
    if isinstance(stderr, bytes):
        stderr = stderr.decode(errors="replace")
    found = {m.group("id") for m in _UNKNOWN.finditer(stderr)}
    found |= {m.group("id") for m in _HISTORY.finditer(stderr)}
    return found
