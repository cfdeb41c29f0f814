"""The job spec: one typed, frozen description of everything a training job needs.

A spec is a YAML file under ``jobs/``. It may ``extends:`` a site defaults file
(a path relative to the spec), which is deep-merged *under* it, and the command
line may override any key with ``--set dotted.key=value``. Every mistake ends in
one :class:`~cluster.errors.SpecError` naming the file and the dotted key.

This module is on the login-node path: it imports yaml and the stdlib only.
"""

from __future__ import annotations

import dataclasses
import errno
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from cluster.errors import SpecError
from cluster.pyyaml import yaml
from cluster.units import MAX_WALLTIME_SECONDS, format_memory, format_walltime, parse_memory, parse_walltime
from train.contract.config import TrainConfig
from train.contract.record import Record

__all__ = [
    "JobSpec", "SchedulerConfig", "Resources", "Environment", "Output", "SpecLoader",
    "load_spec", "spec_from_dict", "apply_overrides", "parse_yaml", "dump_yaml", "expand_path",
    # re-exported from cluster.units (their home), for existing callers
    "format_memory", "format_walltime", "parse_memory", "parse_walltime",
]

PBS_FLAVORS = ("pbspro", "torque")
SLURM_GPU_FLAGS = ("gres", "gpus", "gpus-per-node")
CONTINUATIONS = ("requeue", "chain")

# Values that end up inside #SBATCH/#PBS lines or unquoted shell words: ASCII words, each
# (first characters, other characters, most characters). Checked with sets, not regular
# expressions: exact (a `$` would let a trailing newline through, `\w` and `\d` non-ASCII
# letters and digits) and nothing compiled at import on the login path.
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_NAME_WORD = (frozenset(_ALNUM), frozenset(_ALNUM + "._-"), 64)
_QUEUE_WORD = (frozenset(_ALNUM), frozenset(_ALNUM + "._@-"), None)
_MODULE_WORD = (frozenset(_ALNUM + "_"), frozenset(_ALNUM + "_.+/-"), None)
_ENV_NAME_WORD = (frozenset(_ALNUM[:52] + "_"), frozenset(_ALNUM + "_"), None)
_VAR_NAME_WORD = (_ENV_NAME_WORD[0], _ENV_NAME_WORD[1], 64)
# Paths may use $VAR and ${VAR}; nothing that runs a command or ends one.
_PATH_FORBIDDEN = ("$(", "`", ";", "&", "|", "<", ">", '"', "\\", "'")
# Control characters (ASCII's C0 and DEL), as sets too: a value holds one unless it is disjoint.
_CONTROL = frozenset(map(chr, [*range(0x20), 0x7f]))
_CONTROL_NOT_TAB = _CONTROL - {"\t"}
# The other patterns are regular expressions as text (``_EXPAND``, ``_PLACEHOLDER``): ``re``
# compiles each on first use (and caches it), so a command pays only for those it uses.


def _is_word(value: str, word: tuple[frozenset[str], frozenset[str], int | None]) -> bool:
    """``value`` is one ASCII word of the kind ``word`` describes (see ``_NAME_WORD``)."""
    first, rest, most = word
    return bool(value) and value[0] in first and (most is None or len(value) <= most) \
        and all(c in rest for c in value[1:])


def _has_control(value: str, control: frozenset[str] = _CONTROL) -> bool:
    return not control.isdisjoint(value)


# ---------------------------------------------------------------- YAML

MAX_SPEC_BYTES = 1024 * 1024
"""A spec file (or an ``extends`` file) is read only if it is a regular file of at most this size."""
MAX_EXTENDS_DEPTH = 20
"""How many files an ``extends`` chain may hold below the spec."""
MAX_YAML_DEPTH = 20
"""How deeply YAML collections may nest (a spec needs 5 levels; the parser recurses per level)."""
MAX_YAML_NODES = 10_000
"""How many keys, values and items one YAML text may hold (a spec has about a hundred)."""
_PURE_PARSE_LIMIT = 64 * 1024
"""A text up to this size that libyaml finds wrong is parsed again by PyYAML, for its clearer messages."""
MAX_INT_DIGITS = 40
"""Longer integer literals are refused while parsing (before Python's own digit limit)."""
MAX_INT = 2 ** 63 - 1
"""The largest integer a spec value may hold (what schedulers, numpy and torch all accept)."""
_SHOW_LIMIT = 70
"""Values echoed in messages are cut to about this many characters."""


class _YAMLRefused(yaml.MarkedYAMLError):
    """Something the spec loader refuses while parsing (an alias, too deep, a huge integer)."""

    def __init__(self, problem: str, mark: Any) -> None:
        super().__init__(problem=problem, problem_mark=mark)


class _Bounded:
    """The spec loader's limits, as a mixin placed before PyYAML's Composer and SafeConstructor."""

    def _init_limits(self) -> None:
        self._path: list[str] = []  # dotted-key parts of the node being composed
        self._nodes = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise _YAMLRefused(f"alias *{cut(str(event.anchor), 20)} is not allowed in a spec (write the value "
                               "out; share settings between specs with extends)", event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_YAML_NODES:
            raise _YAMLRefused(f"more than {MAX_YAML_NODES} values (allowed: a spec of at most {MAX_YAML_NODES} "
                               "keys, values and items)", self.peek_event().start_mark)
        if isinstance(index, yaml.Node):  # the value of a mapping entry: index is its key
            part = index.value if isinstance(index, yaml.ScalarNode) else "?"
            self._path.append(f".{part}" if self._path else str(part))
        elif isinstance(index, int):  # an item of a sequence
            self._path.append(f"[{index}]")
        else:  # the root, or a mapping key
            self._path.append("")
        try:
            if len(self._path) > MAX_YAML_DEPTH + 1:
                event = self.peek_event()
                raise _YAMLRefused(f"nested deeper than {MAX_YAML_DEPTH} levels (allowed: at most "
                                   f"{MAX_YAML_DEPTH})", event.start_mark)
            node = super().compose_node(parent, index)
            if isinstance(node, yaml.MappingNode):
                self._check_duplicates(node)
            return node
        finally:
            self._path.pop()

    def _check_duplicates(self, node: yaml.MappingNode) -> None:
        first_line: dict[tuple[str, str], int] = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            ident = (key_node.tag, key_node.value)
            line = key_node.start_mark.line + 1
            if ident in first_line:
                prefix = "".join(self._path).lstrip(".")
                key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
                raise SpecError(cut(key, 120), f"duplicate key on line {line} "
                                f"(first on line {first_line[ident]}; allowed: each key once per mapping)")
            first_line[ident] = line

    def construct_yaml_int(self, node: yaml.ScalarNode) -> int:
        literal = str(node.value).lstrip("+-").replace("_", "")
        digits = len(literal) - 2 if literal[:2].lower() in ("0x", "0o", "0b") else len(literal)
        if digits > MAX_INT_DIGITS:
            raise _YAMLRefused(f"integer of {digits} digits (allowed: at most {MAX_INT})", node.start_mark)
        return super().construct_yaml_int(node)


class SpecLoader(_Bounded, yaml.SafeLoader):
    """Safe loading, minus YAML 1.1's base-60 numbers: ``time: 1:30:00`` must stay a string.

    PyYAML reads ``1:30:00`` as the integer 5400 and ``1e-3`` as a string; the first
    would silently turn a walltime into minutes, so plain scalars follow YAML 1.2 here.

    Bounded, whatever the text: aliases (``*name``) are refused, so the document is a
    tree no larger than its text (no "billion laughs"); nesting deeper than
    :data:`MAX_YAML_DEPTH` and integer literals longer than :data:`MAX_INT_DIGITS` digits
    are refused; a key given twice in one mapping is refused with its dotted path and
    line (PyYAML would silently keep the last one).
    """

    def __init__(self, stream: Any) -> None:
        yaml.SafeLoader.__init__(self, stream)
        self._init_limits()


_CParser = getattr(getattr(yaml, "cyaml", None), "CParser", None) if yaml.__with_libyaml__ else None

if _CParser is not None:
    class _FastSpecLoader(_Bounded, yaml.composer.Composer, _CParser, yaml.constructor.SafeConstructor,
                          yaml.resolver.Resolver):
        """:class:`SpecLoader` with libyaml's scanner and parser (several times faster; same limits)."""

        def __init__(self, stream: Any) -> None:
            _CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._init_limits()
else:  # pragma: no cover - PyYAML built without libyaml
    _FastSpecLoader = None  # type: ignore[assignment,misc]

SpecLoader.add_constructor("tag:yaml.org,2002:int", _Bounded.construct_yaml_int)
SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0o[0-7_]+|[-+]?[0-9][0-9_]*|[-+]?0x[0-9a-fA-F_]+)\Z"),
    list("-+0123456789"),
)
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))\Z"),
    list("-+0123456789."),
)
if _FastSpecLoader is not None:
    _FastSpecLoader.add_constructor("tag:yaml.org,2002:int", _Bounded.construct_yaml_int)
    _FastSpecLoader.yaml_implicit_resolvers = SpecLoader.yaml_implicit_resolvers


def parse_yaml(text: str) -> Any:
    """Parse YAML text with :class:`SpecLoader` (safe: no tags that construct objects).

    Raises yaml.YAMLError for text that is not YAML or that the loader refuses, and
    :class:`SpecError` (key: the dotted path, no file) for a duplicate key.
    """
    if _FastSpecLoader is None:
        return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader
    try:
        return yaml.load(text, Loader=_FastSpecLoader)  # noqa: S506 - a SafeConstructor
    except (_YAMLRefused, yaml.constructor.ConstructorError):
        raise
    except yaml.YAMLError:
        if len(text) > _PURE_PARSE_LIMIT:
            raise
    # Not YAML: PyYAML's own parser says why more clearly (the offending character, in quotes).
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader


# ---------------------------------------------------------------- sections


@dataclass(frozen=True, eq=False, repr=False)
class SchedulerConfig(Record):
    """How the job reaches a scheduler."""

    kind: str = "auto"
    """auto | slurm | pbs | local. ``auto`` picks Slurm, then PBS, then the local executor."""
    pbs_flavor: str = "pbspro"
    """pbspro (``-l select=...``) or torque (``-l nodes=N:ppn=C``)."""
    slurm_gpu_flag: str = "gres"
    """How this Slurm site wants GPUs: ``--gres=gpu:N``, ``--gpus=N`` or ``--gpus-per-node=N``."""
    extra_directives: tuple[str, ...] = ()
    """Raw directive lines added as they are (trusted input), e.g. ``--constraint=a100``."""
    skip_directives: tuple[str, ...] = ()
    """Directive names this toolkit must not emit, e.g. ``--mem`` on sites that refuse it."""
    max_requeues: int = 3
    """How often a preempted or timed-out job continues itself before giving up."""
    signal_seconds: int = 120
    """How long before the walltime Slurm warns the job (``--signal=USR2@N``)."""
    max_node_failures: int = 2
    """How often a run resumes by itself after a node failed under it (Slurm requeues the job
    on the healthy nodes); one more failure fails the run (``cluster resume`` goes on)."""
    continuation: str = "requeue"
    """How a checkpointed Slurm job goes on: ``requeue`` (``scontrol requeue`` of the same job;
    where the site refuses it, a dependency chain instead) or ``chain`` (always a new job,
    ``sbatch --dependency=afterany:<job>`` of the same script). PBS jobs always chain."""


@dataclass(frozen=True, eq=False, repr=False)
class Resources(Record):
    """One resource vocabulary, translated per scheduler by the renderers."""

    queue: str | None = None
    """Partition (Slurm) or queue (PBS); the seed uses ``gpu``."""
    account: str | None = None
    nodes: int = 1
    tasks_per_node: int = 1
    gpus_per_node: int = 0
    cpus_per_task: int = 1
    mem_mb: int | None = None
    """Memory per node in MiB, normalised from ``mem`` (``16G``, ``500M``, plain GB)."""
    time_seconds: int | None = None
    """Walltime in seconds, normalised from ``time`` (``HH:MM:SS``, ``D-HH:MM:SS``, minutes)."""


@dataclass(frozen=True, eq=False, repr=False)
class Environment(Record):
    """What the batch script sets up before training."""

    modules: tuple[str, ...] = ()
    """Environment modules loaded in order; a failed load stops the job."""
    tmpdir: str | None = "$HOME/tmp"
    """Private TMPDIR, created if missing ($VAR allowed, expanded in the job)."""
    setup: tuple[str, ...] = ()
    """Raw shell lines run after the modules (trusted input, e.g. ``source venv/bin/activate``)."""
    env: tuple[tuple[str, str], ...] = ()
    """Exported variables, in order."""
    python: str | None = None
    """Interpreter on compute nodes; default: the one that runs ``cluster``."""
    venv: str | None = None
    """A virtualenv on the shared filesystem: the script activates it after the module loads
    (a missing or broken one stops the job, like a failed ``module load``) and the job runs its
    ``bin/python``. ``cluster env SPEC`` builds it."""
    requirements: tuple[str, ...] = ()
    """What ``cluster env`` installs into :attr:`venv` besides this project (pip requirement
    strings, e.g. ``torch==2.5.1``; passed to pip as arguments, never to a shell)."""
    requirements_file: str | None = None
    """A pip requirements file ``cluster env`` installs too (relative: to the current directory)."""


@dataclass(frozen=True, eq=False, repr=False)
class Output(Record):
    """Where a job's outputs go."""

    runs_dir: str = "runs"
    """Where run directories are created (relative paths: to the current directory)."""


@dataclass(frozen=True, eq=False, repr=False)
class JobSpec(Record):
    """A fully resolved job spec."""

    name: str
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: Resources = field(default_factory=Resources)
    environment: Environment = field(default_factory=Environment)
    output: Output = field(default_factory=Output)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """Grid of dotted keys to value lists; one array task per combination."""
    command: tuple[str, ...] = ()
    """A program to run instead of the trainer (a command job), as argv items that may hold
    ``{name}`` placeholders from :attr:`vars`; empty for a ``train:`` job."""
    vars: tuple[tuple[str, Any], ...] = ()
    """The values of the command's ``{name}`` placeholders (a sweep varies them: ``vars.lr``)."""
    source: str = ""
    """The file the spec was loaded from (for messages; not part of the spec)."""

    def to_dict(self) -> dict[str, Any]:
        """Plain YAML-safe data that :func:`load_spec` reads back to an equal spec."""
        res = self.resources
        data: dict[str, Any] = {
            "name": self.name,
            "scheduler": {
                "kind": self.scheduler.kind,
                "pbs_flavor": self.scheduler.pbs_flavor,
                "slurm_gpu_flag": self.scheduler.slurm_gpu_flag,
                "extra_directives": list(self.scheduler.extra_directives),
                "skip_directives": list(self.scheduler.skip_directives),
                "max_requeues": self.scheduler.max_requeues,
                "signal_seconds": self.scheduler.signal_seconds,
                "max_node_failures": self.scheduler.max_node_failures,
                "continuation": self.scheduler.continuation,
            },
            "resources": {
                "queue": res.queue,
                "account": res.account,
                "nodes": res.nodes,
                "tasks_per_node": res.tasks_per_node,
                "gpus_per_node": res.gpus_per_node,
                "cpus_per_task": res.cpus_per_task,
                "mem": format_memory(res.mem_mb) if res.mem_mb else None,
                "time": format_walltime(res.time_seconds) if res.time_seconds else None,
            },
            "environment": {
                "modules": list(self.environment.modules),
                "tmpdir": self.environment.tmpdir,
                "setup": list(self.environment.setup),
                "env": dict(self.environment.env),
                "python": self.environment.python,
            },
            "output": {"runs_dir": self.output.runs_dir},
            "train": self.train.to_dict(),
        }
        env = self.environment
        # Only when set: specs without them resolve (and render) exactly as before.
        if env.venv is not None:
            data["environment"]["venv"] = env.venv
        if env.requirements:
            data["environment"]["requirements"] = list(env.requirements)
        if env.requirements_file is not None:
            data["environment"]["requirements_file"] = env.requirements_file
        if self.command:  # a command job has no train: section
            del data["train"]
            data["command"] = list(self.command)
            data["vars"] = dict(self.vars)
        if self.sweep:
            data["sweep"] = {key: list(values) for key, values in self.sweep}
        return data

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    def argv(self) -> list[str]:
        """The command job's argv, placeholders filled from ``vars`` (validated by the loader)."""
        values = dict(self.vars)
        return [render_placeholders(item, values, f"command[{i}]") for i, item in enumerate(self.command)]

    def runs_dir_path(self, environ: Mapping[str, str] | None = None) -> Path:
        """``output.runs_dir`` as the job script reads it, expanded here (on the login node).

        The submit path must create run directories through this, not ``Path(runs_dir)``:
        ``$HOME/x`` would otherwise become a directory literally named ``$HOME``. A relative
        path stays relative (to the current directory). See :func:`expand_path`.
        """
        return Path(expand_path(self.output.runs_dir, environ, key="output.runs_dir", file=self.source))

    def tmpdir_path(self, environ: Mapping[str, str] | None = None) -> Path | None:
        """``environment.tmpdir`` expanded like :meth:`runs_dir_path` (None: no private TMPDIR)."""
        if self.environment.tmpdir is None:
            return None
        return Path(expand_path(self.environment.tmpdir, environ, key="environment.tmpdir", file=self.source))


def expand_path(text: str, environ: Mapping[str, str] | None = None, *, key: str = "", file: str = "",
                strict: bool = True) -> str:
    """Expand a validated path exactly as the rendered script's ``"..."`` word does in bash.

    A leading ``~`` or ``~/`` is ``$HOME`` (what ``shell_path`` writes); ``$NAME`` and
    ``${NAME}`` take their values from ``environ`` (default: ``os.environ``); nothing else
    is special (the loader allowed nothing else). Where bash would expand an unset
    variable to nothing (``$SCRATCH/runs`` -> ``/runs``), this raises a one-line
    :class:`SpecError` instead: on the login node that is always a mistake. With
    ``strict=False`` an unset variable is empty, as in bash (for ``environment.env``
    values, which the local executor exports in order: ``os.environ`` then holds the
    earlier ones, as the script's shell does).
    """
    env = os.environ if environ is None else environ
    if text == "~" or text.startswith("~/"):
        text = "$HOME" + text[1:]

    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in env:
            if not strict:
                return ""
            raise SpecError(key, f"uses ${name}, which is not set here (allowed: variables set in the "
                            "environment of cluster; set it, or write the path out)", file or None)
        return env[name]

    return re.sub(_EXPAND, value, text, flags=re.ASCII)


_EXPAND = r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))"


def dump_yaml(data: Mapping[str, Any]) -> str:
    """Safe YAML, in the key order given: libyaml's emitter where PyYAML has it (the same text,
    several times faster: a sweep writes one spec per task), else PyYAML's own.

    Never with anchors and aliases (``&id001``/``*id001`` for a list that appears twice):
    each value is written out where it is. So the text of a mapping is the texts of its
    top-level keys one after the other, which a sweep uses (:class:`SpecTexts`)."""
    return yaml.dump(dict(data), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True)


class _Dumper(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):  # type: ignore[misc]
    def ignore_aliases(self, data: Any) -> bool:
        return True


class SpecTexts:
    """The YAML text of many specs that differ from one base spec in a few values (a sweep's
    tasks, one ``train.lr`` each), exactly as :meth:`JobSpec.to_yaml` writes it, for a
    fraction of the cost: the text of a mapping is the texts of its keys one after the other
    (:func:`dump_yaml` writes no aliases), so each top-level section, and each key of a
    section, is written once for the base and again only where a spec's value differs."""

    def __init__(self, base: JobSpec) -> None:
        self.base = base.to_dict()
        self.texts: dict[tuple[str, ...], str] = {}

    def of(self, spec: JobSpec) -> str:
        return "".join(self._section(key, value) for key, value in spec.to_dict().items())

    def _section(self, key: str, value: Any) -> str:
        base = self.base.get(key, _NOTHING)
        if not isinstance(value, dict) or not value or not isinstance(base, dict) or _same(base, value):
            return self._text((key,), value, base, {key: value})
        # "train:\n" and then the section's keys, each at the indentation the whole dump gives it
        return f"{key}:\n" + "".join(self._text((key, name), item, base.get(name, _NOTHING), {key: {name: item}})
                                     for name, item in value.items())

    def _text(self, path: tuple[str, ...], value: Any, base: Any, data: dict[str, Any]) -> str:
        same = _same(base, value)
        if same and path in self.texts:
            return self.texts[path]
        text = dump_yaml(data)
        if len(path) == 2:  # the section's own line is written by _section
            text = text.removeprefix(f"{path[0]}:\n")
        if same:
            self.texts[path] = text
        return text


_NOTHING = object()


def _same(a: Any, b: Any) -> bool:
    """Equal and of the same types throughout (1, 1.0 and True are equal but written apart)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_same(v, b[k]) for k, v in a.items())
    if isinstance(a, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


# ---------------------------------------------------------------- loading


def load_spec(path: str | Path, overrides: Sequence[str] = ()) -> JobSpec:
    """Load, merge (``extends``), override (``--set``) and validate a spec file."""
    path = Path(path)
    data, origins = _load_with_extends(path, chain=(), names=())
    for item in overrides:
        _apply_override(data, origins, item, str(path))
    try:
        return _build(data, source=str(path))
    except SpecError as err:
        raise err.with_file(_origin_of(err.key, origins, str(path))) from None


def spec_from_dict(data: Mapping[str, Any], source: str = "<spec>") -> JobSpec:
    """Validate an already-merged mapping (used for sweep points)."""
    try:
        return _build(dict(data), source=source)
    except SpecError as err:
        raise err.with_file(source) from None


def apply_overrides(spec: JobSpec, assignments: Mapping[str, Any]) -> JobSpec:
    """A copy of ``spec`` (without its ``sweep:``) with dotted keys set to already-parsed values.

    Keys under ``train.`` of a train job (or ``vars.`` of a command job), a sweep's points, are
    checked by validating that section again alone: the rest of ``spec`` is valid already,
    and no rule of another section reads them. Any other key: the whole spec is validated
    again. Both give the same spec, or the same error."""
    section = _only_section(spec, assignments)
    if section == "train":
        data: dict[str, Any] = {"train": spec.train.to_dict()}
    elif section == "vars":
        data = {"vars": dict(spec.vars)}
    else:
        data = spec.to_dict()
    data.pop("sweep", None)
    for key, value in assignments.items():
        _set_dotted(data, key.split("."), value, key, spec.source)
    if not section:
        return spec_from_dict(data, source=spec.source)
    try:
        _check_numbers(data, "")
        if section == "train":
            return dataclasses.replace(spec, train=_train_config(data), sweep=())
        data["command"] = list(spec.command)  # the placeholders' rules read command and resources
        data["resources"] = {"nodes": spec.resources.nodes, "tasks_per_node": spec.resources.tasks_per_node}
        return dataclasses.replace(spec, **_command_sections(data), sweep=())
    except SpecError as err:
        raise err.with_file(spec.source) from None


def _only_section(spec: JobSpec, assignments: Mapping[str, Any]) -> str | None:
    """"train" (a train job) or "vars" (a command job) when every key is under it, else None."""
    section = "vars" if spec.command else "train"
    if assignments and all(key.startswith(section + ".") and key != section + "." for key in assignments):
        return section
    return None


def _read_bytes(path: Path, where: str) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_SPEC_BYTES`; a one-line SpecError otherwise.

    Checked with stat before opening, and opened non-blocking, so that a FIFO, a device
    (``/dev/zero``) or a symlink loop ends in an error at once instead of a hang or a
    read without end.
    """
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SpecError("", "file not found", where) from None
    except OSError as err:
        raise SpecError("", _os_problem(err), where) from None
    if stat.S_ISDIR(info.st_mode):
        raise SpecError("", "is a directory (expected a YAML job spec file)", where)
    if not stat.S_ISREG(info.st_mode):
        raise SpecError("", f"is {_kind_of(info.st_mode)}, not a regular file (expected a YAML job spec file)", where)
    if info.st_size > MAX_SPEC_BYTES:
        raise SpecError("", f"is {info.st_size} bytes (allowed: a spec file of at most {MAX_SPEC_BYTES} bytes)", where)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
                     | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise SpecError("", "file not found", where) from None
    except OSError as err:
        raise SpecError("", _os_problem(err), where) from None
    try:
        info = os.fstat(fd)  # what was opened, if the file was swapped since the stat above
        if not stat.S_ISREG(info.st_mode):
            raise SpecError("", f"is {_kind_of(info.st_mode)}, not a regular file (expected a YAML job spec file)",
                            where)
        chunks, size = [], 0
        while size <= MAX_SPEC_BYTES:
            chunk = os.read(fd, MAX_SPEC_BYTES + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as err:
        raise SpecError("", _os_problem(err), where) from None
    finally:
        os.close(fd)
    if size > MAX_SPEC_BYTES:  # it grew since the stat
        raise SpecError("", f"is more than {MAX_SPEC_BYTES} bytes (allowed: a spec file of at most "
                        f"{MAX_SPEC_BYTES} bytes)", where)
    return b"".join(chunks)


def _os_problem(err: OSError) -> str:
    if err.errno == errno.ELOOP:
        return "symlink loop (too many levels of symbolic links; expected a YAML job spec file)"
    if err.errno == errno.ENAMETOOLONG:
        return "file name too long"
    return f"cannot read ({err.strerror or type(err).__name__})"


def _kind_of(mode: int) -> str:
    """"a FIFO", "a device", ...: the run-directory layer's words (imported here, not at the top:
    only a spec file that is not a regular file needs them)."""
    from train.contract.rundir import kind_of

    return kind_of(mode)


def _read_yaml(path: Path) -> dict[str, Any]:
    where = str(path)
    raw = _read_bytes(path, where)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start:err.start + 1].hex()
        raise SpecError("", f"not valid UTF-8 (byte 0x{bad} at offset {err.start}; save the file as UTF-8)",
                        where) from None
    try:
        doc = parse_yaml(text)
    except SpecError as err:  # a duplicate key
        raise err.with_file(where) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        if isinstance(err, yaml.reader.ReaderError):  # a raw control character: no mark, a position
            line = f"line {text.count(chr(10), 0, err.position) + 1}: "
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, yaml.constructor.ConstructorError):
            problem = f"{cut(problem, 160)} (YAML tags that construct objects are not allowed)"
        raise SpecError("", f"{line}YAML error: {cut(problem, 200)}", where) from None
    if doc is None:
        raise SpecError("", "empty file (expected a mapping of spec keys)", where)
    if not isinstance(doc, dict):
        raise SpecError("", f"top level must be a mapping of spec keys (got {_kind(doc)})", where)
    for key in doc:
        if not isinstance(key, str):
            raise SpecError(_show(key), "keys must be strings", where)
    return doc


def _load_with_extends(path: Path, chain: tuple[Path, ...], names: tuple[str, ...]
                       ) -> tuple[dict, dict[str, str]]:
    """``chain`` holds the resolved files that extend this one (to find cycles), ``names`` the same as written."""
    if len(chain) > MAX_EXTENDS_DEPTH:
        raise SpecError("extends", f"chain of more than {MAX_EXTENDS_DEPTH} files (allowed: at most "
                        f"{MAX_EXTENDS_DEPTH} levels of extends)", names[-1])
    doc = _read_yaml(path)  # first: a symlink loop or a FIFO is reported before resolve() meets it
    try:
        resolved = path.resolve()
    except (OSError, RuntimeError):
        raise SpecError("", _os_problem(OSError(errno.ELOOP, "loop")), str(path)) from None
    if resolved in chain:
        cycle = " -> ".join((*names, str(path)))
        raise SpecError("extends", cut(f"cycle {cycle}", 160)
                        + " (a file must not extend itself, directly or not)", names[-1])
    base_ref = doc.pop("extends", None)
    origins: dict[str, str] = {}
    if base_ref is None:
        merged: dict = {}
    else:
        if not isinstance(base_ref, str) or not base_ref.strip():
            raise SpecError("extends", f"must be a path to a site defaults file (got {_kind(base_ref)}; "
                            "allowed: a path relative to this file)", str(path))
        if len(base_ref) > 1024 or _has_control(base_ref):
            raise SpecError("extends", f"invalid path {_show(base_ref)} (allowed: a path relative to this file, "
                            "one line, at most 1024 characters)", str(path))
        base_path = path.parent / base_ref
        try:
            os.stat(base_path)
        except (FileNotFoundError, NotADirectoryError):
            raise SpecError("extends", f"file not found: {cut(base_ref, 60)} (looked for {cut(str(base_path), 80)}; "
                            "allowed: a path relative to this file)", str(path)) from None
        except OSError:
            pass  # a symlink loop, no permission: _read_yaml says so, naming the file
        merged, origins = _load_with_extends(base_path, chain + (resolved,), names + (str(path),))
    _deep_merge(merged, doc, origins, str(path), prefix="")
    return merged, origins


def _deep_merge(base: dict, top: Mapping, origins: dict[str, str], file: str, prefix: str) -> None:
    for key, value in top.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "env":
            _deep_merge(base[key], value, origins, file, prefix=f"{dotted}.")
        else:
            base[key] = value
            _note_origin(origins, dotted, file)


def _note_origin(origins: dict[str, str], key: str, file: str) -> None:
    """Record that ``file`` replaced ``key`` (and all inside it); the dict stays in the order of setting."""
    origins.pop(key, None)
    origins[key] = file


def _origin_of(key: str, origins: Mapping[str, str], default: str) -> str:
    """The file (or ``--set``) that last replaced ``key``, a section around it, or a key inside it."""
    key = re.sub(r"\[[0-9]+\]", "", key)  # environment.modules[1] was set as environment.modules
    if not key:
        return default
    related = [file for name, file in origins.items()
               if name == key or name.startswith(key + ".") or key.startswith(name + ".")]
    return related[-1] if related else default


def _apply_override(data: dict, origins: dict[str, str], item: str, file: str) -> None:
    where = f"{file} (--set {cut(item, 80)})"
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not all(key.split(".")):
        raise SpecError("", "expected dotted.key=value (e.g. --set resources.time=01:00:00)", where)
    try:
        value = parse_yaml(text) if text.strip() else None
    except SpecError as err:  # a duplicate key inside the value
        raise SpecError(cut(f"{key}.{err.key}", 100), err.message, where) from None
    except yaml.constructor.ConstructorError:
        raise SpecError(key, "YAML tags that construct objects are not allowed (allowed: plain YAML values)",
                        where) from None
    except yaml.YAMLError as err:
        if text.lstrip()[:1] in ("[", "{"):  # meant as a list or mapping: say why it is not one
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise SpecError(key, f"YAML error in the value: {problem} (quote items that hold "
                            "special characters, e.g. [\"a: b\"])", where) from None
        value = text  # not YAML (e.g. a stray '@' or '`'): take the text as it is
    _set_dotted(data, key.split("."), value, key, where)
    _note_origin(origins, key, where)


def _set_dotted(data: dict, parts: list[str], value: Any, key: str, where: str) -> None:
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpecError(cut(".".join(parts[: i + 1]), 80), f"is {_kind(child)}, not a mapping "
                            f"(cannot set {cut(key, 80)} inside it)", where)
        node = child
    node[parts[-1]] = value


# ---------------------------------------------------------------- validation


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


def _section(data: Mapping, key: str, valid: Iterable[str]) -> dict:
    value = data.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise SpecError(key, f"must be a mapping (got {_kind(value)})")
    _check_keys(value, key, valid)
    return value


def _check_keys(value: Mapping, prefix: str, valid: Iterable[str]) -> None:
    valid = list(valid)
    for name in value:
        if name not in valid:
            dotted = f"{prefix}.{name}" if prefix else str(name)
            raise SpecError(cut(dotted, 80), f"unknown key (valid: {', '.join(valid)})")


def _choice(section: Mapping, prefix: str, key: str, choices: Sequence[str], default: str) -> str:
    value = section.get(key, default)
    if value not in choices:
        raise SpecError(f"{prefix}.{key}", f"unknown value {_show(value)} (allowed: {', '.join(choices)})")
    return value


def _count(section: Mapping, prefix: str, key: str, default: int, minimum: int = 1,
           maximum: int | None = None, why: str = "") -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise SpecError(f"{prefix}.{key}", f"must be {need} (got {_show(value)})")
    if maximum is not None and value > maximum:
        raise SpecError(f"{prefix}.{key}", f"must be at most {maximum} (got {_show(value)}; allowed: "
                        f"{minimum} to {maximum}{why})")
    return value


def _unit(value: Any, key: str, parse: Callable[[Any], int], allowed: str) -> int:
    try:
        return parse(value)
    except ValueError as err:
        if str(err):
            raise SpecError(key, f"{err} (got {_show(value)}; allowed: {allowed})") from None
        raise SpecError(key, f"cannot parse {_show(value)} (allowed: {allowed})") from None


def cut(text: str, limit: int = _SHOW_LIMIT) -> str:
    """``text``, or its first ``limit`` characters and ``...``."""
    return text if len(text) <= limit else text[: max(limit - 3, 1)] + "..."


def _show(value: Any, limit: int = _SHOW_LIMIT) -> str:
    """A value as the user wrote it in YAML (``true``, not ``True``), cut to about ``limit`` characters.

    Bounded in time and memory whatever the value: a long string or list is cut before it
    is written out, an integer too long to print is described by its number of digits.
    """
    return cut(_short_repr(value, limit + 1), limit)


def _short_repr(value: Any, budget: int) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    if isinstance(value, int):
        if value.bit_length() > 3 * budget + 8:  # surely longer than the budget (and maybe unprintable)
            return f"<an integer of about {int(value.bit_length() * 0.30103) + 1} digits>"
        return repr(value)
    if isinstance(value, str):
        return repr(value[:budget])[:-1] + ("'" if len(value) <= budget else "")
    if isinstance(value, (list, tuple, dict)):
        items = value.items() if isinstance(value, dict) else value
        opening, closing = ("{", "}") if isinstance(value, dict) else ("[", "]")
        out, used = [], 1
        for item in items:
            if used > budget:
                out.append("...")
                break
            if isinstance(value, dict):
                text = f"{_short_repr(item[0], budget - used)}: {_short_repr(item[1], budget - used)}"
            else:
                text = _short_repr(item, budget - used)
            out.append(text)
            used += len(text) + 2
        return opening + ", ".join(out) + closing
    return cut(repr(value), budget)


def _check_numbers(value: Any, key: str, depth: int = 0) -> None:
    """Refuse integers outside what every consumer can hold (schedulers, numpy and torch seeds:
    64 bits); found anywhere in the merged spec, before anything prints or converts them."""
    if isinstance(value, bool):
        return
    if isinstance(value, int):
        if not -MAX_INT - 1 <= value <= MAX_INT:
            raise SpecError(key, f"integer too large ({_show(value)}; allowed: at most {MAX_INT})")
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_numbers(item, f"{key}.{name}" if key else str(name), depth + 1)
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_numbers(item, f"{key}[{i}]", depth + 1)


def _safe_string(value: Any, key: str, word: tuple[frozenset[str], frozenset[str], int | None],
                 allowed: str) -> str:
    if not isinstance(value, str):
        raise SpecError(key, f"must be a string (got {_kind(value)})")
    if _has_control(value):
        raise SpecError(key, f"contains a newline or control character (allowed: {allowed})")
    if not _is_word(value, word):
        raise SpecError(key, f"invalid value {_show(value)} (allowed: {allowed})")
    return value


# Paths and env values go into double-quoted shell words ("..."): there only $NAME and
# ${NAME} may expand. Any other '$' could start an expansion that evaluates text: $(...)
# and `...` run commands, and $[X] or $((X)) evaluate X's *value* as arithmetic, where an
# array subscript such as a[$(cmd)] runs cmd. So a lone '$' is refused too: with D: "$",
# X: "a[${D}(cmd)]" and Y: "$[X]" three harmless-looking values would compose into a command.
_SHELL_REF = r"\$(?:\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)"
_MAX_SHELL_TEXT = 4096
PATH_ALLOWED = "allowed: a path, $VAR or ${VAR}"
PATH_NO_COMMANDS = "allowed: a path, $VAR or ${VAR}; no commands or quotes"


def _shell_text(value: str, key: str) -> str:
    """Refuse anything in a double-quoted shell word but literal text, $NAME and ${NAME}."""
    if len(value) > _MAX_SHELL_TEXT:
        raise SpecError(key, f"is {len(value)} characters long (allowed: at most {_MAX_SHELL_TEXT})")
    if _has_control(value):
        raise SpecError(key, f"contains a newline or control character ({PATH_ALLOWED})")
    rest = re.sub(_SHELL_REF, "", value, flags=re.ASCII)
    dollar = rest.find("$")
    if dollar >= 0:
        after = rest[dollar + 1: dollar + 2]
        if after == "(":
            raise SpecError(key, f"contains '$(' ({PATH_NO_COMMANDS})")
        if after == "{":
            end = rest.find("}", dollar)
            snippet = cut(rest[dollar: end + 1] if end >= 0 else rest[dollar:], 16)
        else:
            snippet = rest[dollar: dollar + 2]
        raise SpecError(key, f"contains {snippet!r}, which is not $NAME or ${{NAME}} ({PATH_NO_COMMANDS})")
    for bad in _PATH_FORBIDDEN:
        if bad in value:
            raise SpecError(key, f"contains {bad!r} ({PATH_NO_COMMANDS})")
    # A stray brace would end the ${CLUSTER_RUN_DIR:-...} expansion the script wraps runs_dir in.
    if "{" in rest or "}" in rest:
        raise SpecError(key, f"contains '{{' or '}}' outside ${{VAR}} ({PATH_ALLOWED})")
    return value


def _safe_path(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise SpecError(key, f"must be a path string (got {_kind(value)})")
    if not value.strip():
        raise SpecError(key, f"is empty ({PATH_ALLOWED})")
    _shell_text(value, key)
    if value.startswith("-"):
        # mkdir -p "$TMPDIR", "$PYTHON" -m train: a leading '-' would be read as an option.
        raise SpecError(key, f"starts with '-' (allowed: a path that does not start with '-'; write ./{cut(value, 40)})")
    if value.startswith("~") and not (value == "~" or value.startswith("~/")):
        # The script expands ~ and ~/ (as $HOME); ~user/... would stay a literal directory name.
        raise SpecError(key, f"starts with {cut(value.split('/')[0], 20)!r} (allowed: ~ or ~/ at the start, "
                        "$VAR, ${VAR}; ~user is not expanded)")
    return value


# environment.env names that the toolkit, the scheduler or bash own. PATH, LD_LIBRARY_PATH,
# HOME, PYTHONPATH, CUDA_* and the like stay allowed: users set them on purpose.
_ENV_RESERVED_PREFIXES = ("CLUSTER_", "SLURM_", "PBS_", "SUBMITIT_", "BASH_")
_ENV_RESERVED = frozenset({
    # bash: read-only (an assignment fails) or special (it changes how the script itself runs)
    "BASH", "BASHOPTS", "BASHPID", "SHELLOPTS", "EUID", "UID", "PPID", "GROUPS", "IFS", "ENV", "PS4",
    "POSIXLY_CORRECT", "CDPATH", "GLOBIGNORE", "LINENO", "RANDOM", "SRANDOM", "SECONDS",
    "EPOCHSECONDS", "EPOCHREALTIME", "OPTIND", "OPTARG", "PIPESTATUS", "FUNCNAME", "DIRSTACK",
    "PWD", "OLDPWD", "HISTFILE",
    # the script's own, or set per task by the toolkit
    "TMPDIR", "JOB_ID", "RUN_DIR", "MASTER_ADDR", "MASTER_PORT", "RANK", "LOCAL_RANK", "WORLD_SIZE",
})


def _env_name(var: Any, key: str) -> str:
    if not isinstance(var, str):
        raise SpecError(key, f"must be a string (got {_kind(var)})")
    _safe_string(var, key, _ENV_NAME_WORD, "NAME of letters, digits, '_'")
    if len(var) > 128:
        raise SpecError(key, f"is {len(var)} characters long (allowed: a NAME of at most 128)")
    if var == "TMPDIR":
        raise SpecError(key, "is reserved (allowed: set TMPDIR with environment.tmpdir)")
    if var.startswith(_ENV_RESERVED_PREFIXES) or var in _ENV_RESERVED:
        prefix = next((p for p in _ENV_RESERVED_PREFIXES if var.startswith(p)), None)
        owner = f"names starting with {prefix} belong to the toolkit, the scheduler or bash" if prefix else \
            "bash, the job script or the toolkit sets it"
        raise SpecError(key, f"is reserved ({owner}; allowed: other NAMEs, e.g. PATH or OMP_NUM_THREADS)")
    return var


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise SpecError(key, f"must be a list of strings (got {_kind(value)})")
    if len(value) > MAX_LIST_ITEMS:
        raise SpecError(key, f"has {len(value)} items (allowed: at most {MAX_LIST_ITEMS})")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise SpecError(f"{key}[{i}]", f"must be a string (got {_kind(item)})")
        if len(item) > _MAX_SHELL_TEXT:
            raise SpecError(f"{key}[{i}]", f"is {len(item)} characters long (allowed: at most {_MAX_SHELL_TEXT})")
        if _has_control(item, _CONTROL_NOT_TAB):
            raise SpecError(f"{key}[{i}]", "contains a newline or control character (allowed: one line per item)")
    return tuple(value)


MAX_CPUS_PER_TASK = 1024
MAX_TASKS_PER_NODE = 1024
MAX_GPUS_PER_NODE = 64
MAX_NODES = 100_000
MAX_REQUEUES = 1000
MAX_SIGNAL_SECONDS = 65535  # Slurm's --signal=SIG@N takes at most 65535 seconds
MAX_QUEUE_CHARS = 64
MAX_SWEEP_POINTS = 1000  # Slurm's default MaxArraySize is 1001 (indexes 0-1000)
MAX_LIST_ITEMS = 1000


def _spec_walltime(value: Any) -> int:
    """:func:`parse_walltime`, bounded: a walltime of more than a year is refused."""
    if isinstance(value, str) and len(value.strip()) > 40:
        if re.fullmatch(r"[0-9:\- \t\n\r\f\v]+", value, re.ASCII):
            raise ValueError(f"must be at most {MAX_WALLTIME_SECONDS // 86400} days")
        raise ValueError
    seconds = parse_walltime(value)
    if seconds > MAX_WALLTIME_SECONDS:
        raise ValueError(f"must be at most {MAX_WALLTIME_SECONDS // 86400} days")
    return seconds


def _lookup(data: Any, key: str) -> Any:
    node = data
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _train_config(data: dict) -> TrainConfig:
    """``TrainConfig.from_dict`` (the contract's), with its messages kept short: it echoes values whole."""
    from train.contract.task_probe import isolate_task_imports

    train_data = data.get("train") or {}
    try:
        # A task module that is not ours is imported in a subprocess: its code cannot end, hang or
        # print into the command (a job, which runs the task anyway, imports it in-process).
        with isolate_task_imports(unless_set=True):
            return TrainConfig.from_dict(train_data)
    except SpecError as err:
        key, message = err.key, err.message
        if len(message) > 200:
            try:
                value = _lookup(data, key)
                written = list(value) if isinstance(value, tuple) else value
                described = repr(written) if isinstance(written, str) else str(written)
                if described in message:
                    message = message.replace(described, _show(value), 1)
            except KeyError:
                pass
        raise SpecError(cut(key, 100), cut(message, 220), err.file) from None


def _build(data: dict, source: str) -> JobSpec:
    top_keys = ("name", "scheduler", "resources", "environment", "output", "train", "command", "vars", "sweep")
    _check_keys(data, "", top_keys)
    _check_numbers(data, "")
    if "name" not in data:
        raise SpecError("name", "missing (a job name: letters, digits, '.', '_', '-')")
    name = _safe_string(data["name"], "name", _NAME_WORD, "letters, digits, '.', '_', '-', at most 64")
    o = _section(data, "output", ("runs_dir",))
    output = Output(runs_dir=_safe_path(o.get("runs_dir", "runs"), "output.runs_dir"))
    train_data = data.get("train")
    if train_data is not None and not isinstance(train_data, dict):
        raise SpecError("train", f"must be a mapping (got {_kind(train_data)})")
    spec = JobSpec(name=name, scheduler=_scheduler_section(data), resources=_resources_section(data),
                   environment=_environment_section(data), output=output,
                   train=TrainConfig() if "command" in data else _train_config(data),
                   sweep=_parse_sweep(data.get("sweep"), "vars" if "command" in data else "train"),
                   source=source, **_command_sections(data))
    for key, values in spec.sweep:  # every point must be a valid spec
        for value in values:
            _check_sweep_point(spec, key, value)
    return spec


def _scheduler_section(data: dict) -> SchedulerConfig:
    from cluster import backends  # the registry knows which kinds exist (a test adds a toy one)

    s = _section(data, "scheduler", (f.name for f in dataclasses.fields(SchedulerConfig)))
    return SchedulerConfig(
        kind=_choice(s, "scheduler", "kind", ("auto", *backends.kinds()), "auto"),
        pbs_flavor=_choice(s, "scheduler", "pbs_flavor", PBS_FLAVORS, "pbspro"),
        slurm_gpu_flag=_choice(s, "scheduler", "slurm_gpu_flag", SLURM_GPU_FLAGS, "gres"),
        extra_directives=_string_list(s.get("extra_directives"), "scheduler.extra_directives"),
        skip_directives=_string_list(s.get("skip_directives"), "scheduler.skip_directives"),
        max_requeues=_count(s, "scheduler", "max_requeues", 3, minimum=0, maximum=MAX_REQUEUES),
        signal_seconds=_count(s, "scheduler", "signal_seconds", 120, minimum=0, maximum=MAX_SIGNAL_SECONDS,
                              why="; Slurm's --signal takes at most 65535 seconds"),
        max_node_failures=_count(s, "scheduler", "max_node_failures", 2, minimum=0, maximum=MAX_REQUEUES),
        continuation=_choice(s, "scheduler", "continuation", CONTINUATIONS, "requeue"),
    )


def _resources_section(data: dict) -> Resources:
    r = _section(data, "resources", ("queue", "account", "nodes", "tasks_per_node", "gpus_per_node",
                                     "cpus_per_task", "mem", "time"))
    for key in ("queue", "account"):
        if r.get(key) is not None:
            _safe_string(r[key], f"resources.{key}", _QUEUE_WORD, "letters, digits, '.', '_', '-', '@'")
            if len(r[key]) > MAX_QUEUE_CHARS:
                raise SpecError(f"resources.{key}", f"is {len(r[key])} characters long (allowed: at most "
                                f"{MAX_QUEUE_CHARS})")
    mem_mb = time_seconds = None
    if r.get("mem") is not None:
        mem_mb = _unit(r["mem"], "resources.mem", parse_memory,
                       "16G, 16GB, 16GiB, 500M, or a plain number of GB")
    if r.get("time") is not None:
        time_seconds = _unit(r["time"], "resources.time", _spec_walltime,
                             "HH:MM:SS, D-HH:MM:SS, or minutes")
    tasks_per_node = _count(r, "resources", "tasks_per_node", 1, maximum=MAX_TASKS_PER_NODE)
    gpus_per_node = _count(r, "resources", "gpus_per_node", 0, minimum=0, maximum=MAX_GPUS_PER_NODE)
    train = data.get("train") if isinstance(data.get("train"), dict) else {}
    if 0 < gpus_per_node < tasks_per_node and "command" not in data and train.get("device") != "cpu":
        # Each task of the trainer trains on a GPU of its own (NCCL refuses two ranks on
        # one GPU); a command job's program and a CPU trainer may share GPUs as they like.
        raise SpecError("resources.gpus_per_node", f"is {gpus_per_node} but resources.tasks_per_node is "
                        f"{tasks_per_node}: each task trains on a GPU of its own (allowed: 0, or at least "
                        f"{tasks_per_node}, GPUs beyond one per task stay idle; or train.device: cpu)")
    return Resources(
        queue=r.get("queue"),
        account=r.get("account"),
        nodes=_count(r, "resources", "nodes", 1, maximum=MAX_NODES),
        tasks_per_node=tasks_per_node,
        gpus_per_node=gpus_per_node,
        cpus_per_task=_count(r, "resources", "cpus_per_task", 1, maximum=MAX_CPUS_PER_TASK),
        mem_mb=mem_mb,
        time_seconds=time_seconds,
    )


def _environment_section(data: dict) -> Environment:
    e = _section(data, "environment", ("modules", "tmpdir", "setup", "env", "python", "venv", "requirements",
                                       "requirements_file"))
    modules = _string_list(e.get("modules"), "environment.modules")
    for i, module in enumerate(modules):
        _safe_string(module, f"environment.modules[{i}]", _MODULE_WORD, "a module name like cuda/11.1")
    env_map = e.get("env") or {}
    if not isinstance(env_map, dict):
        raise SpecError("environment.env", f"must be a mapping of NAME: value (got {_kind(env_map)})")
    env_pairs = []
    if len(env_map) > MAX_LIST_ITEMS:
        raise SpecError("environment.env", f"has {len(env_map)} variables (allowed: at most {MAX_LIST_ITEMS})")
    for var, value in env_map.items():
        key = f"environment.env.{cut(str(var), 60)}"
        _env_name(var, key)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise SpecError(key, f"must be a string or number (got {_kind(value)})")
        env_pairs.append((var, _shell_text(str(value), key)))
    return Environment(
        modules=modules,
        tmpdir=_safe_path(e["tmpdir"], "environment.tmpdir") if e.get("tmpdir") is not None
        else (None if "tmpdir" in e else "$HOME/tmp"),
        setup=_string_list(e.get("setup"), "environment.setup"),
        env=tuple(env_pairs),
        python=_safe_path(e["python"], "environment.python") if e.get("python") is not None else None,
        **_venv_keys(e),
    )


def _venv_keys(e: dict) -> dict[str, Any]:
    """``environment.venv``, ``requirements`` and ``requirements_file``, validated."""
    venv = _safe_path(e["venv"], "environment.venv") if e.get("venv") is not None else None
    if venv is not None and e.get("python") is not None:
        # Two answers to "which python runs the job" would disagree in the script and submitit.
        raise SpecError("environment.python", "cannot be set together with environment.venv (the job runs "
                        "the venv's bin/python; remove one)")
    requirements = _string_list(e.get("requirements"), "environment.requirements")
    for i, item in enumerate(requirements):
        if not item.strip() or item.lstrip().startswith("-"):
            # pip would read "-r x" or "--index-url x" as an option, not a requirement.
            raise SpecError(f"environment.requirements[{i}]", f"invalid requirement {_show(item)} (allowed: a "
                            "pip requirement such as torch==2.5.1; options go in environment.requirements_file)")
    file = e.get("requirements_file")
    return {"venv": venv, "requirements": requirements,
            "requirements_file": _safe_path(file, "environment.requirements_file") if file is not None else None}


def _parse_sweep(value: Any, section: str = "train") -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """``section``: ``train`` for a trainer job, ``vars`` for a command job."""
    if value is None:
        return ()
    if not isinstance(value, dict) or not value:
        raise SpecError("sweep", f"must be a mapping of dotted.key: [values] (e.g. {section}.lr: [0.001, 0.0003])")
    grid = []
    for key, values in value.items():
        where = f"sweep.{cut(str(key), 60)}"
        if not isinstance(key, str) or key.split(".")[0] != section:
            # One sweep is one array job, whose tasks share the job's resources and environment.
            raise SpecError(where, f"sweep keys must be dotted keys under {section} "
                            "(the tasks of one array job share its resources)")
        if not isinstance(values, list) or not values:
            raise SpecError(where, f"must be a non-empty list of values (got {_kind(values)})")
        grid.append((key, tuple(values)))
    points = 1
    for _, values in grid:
        points *= len(values)
        if points > MAX_SWEEP_POINTS:
            raise SpecError("sweep", f"gives more than {MAX_SWEEP_POINTS} combinations (allowed: at most "
                            f"{MAX_SWEEP_POINTS} tasks in one array job)")
    return tuple(grid)


MAX_COMMAND_ITEMS = 1000
MAX_COMMAND_CHARS = 100_000
"""Per item as written; once ``{placeholders}`` are filled, :data:`MAX_ARG_BYTES` per argument
and :func:`argv_limit` for all of them hold (what ``execve`` takes)."""
_PLACEHOLDER = r"\{\{|\}\}|\{([^{}]*)\}|[{}]"
PLACEHOLDER_ALLOWED = "allowed: {name} with name in vars, '{{' and '}}' for literal braces"


def render_placeholders(text: str, values: Mapping[str, Any], key: str) -> str:
    """``text`` with each ``{name}`` replaced by ``values[name]`` and ``{{``/``}}`` by a brace.

    A placeholder that names no var, or a lone brace, is a one-line :class:`SpecError` for
    ``key``. Values are written as YAML wrote them: ``true``/``false``, ``0.001``.
    """
    def fill(match: re.Match[str]) -> str:
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name is None:
            raise SpecError(key, f"lone {token!r} in {_show(text, 40)} ({PLACEHOLDER_ALLOWED})")
        if name not in values:
            known = ", ".join(sorted(values)) or "none"
            raise SpecError(key, f"unknown placeholder {{{cut(name, 40)}}} (vars defines: {cut(known, 80)}; "
                            f"{PLACEHOLDER_ALLOWED})")
        value = values[name]
        return ("true" if value else "false") if isinstance(value, bool) else str(value)

    if "{" not in text and "}" not in text:  # most arguments: nothing to fill
        return text
    return re.sub(_PLACEHOLDER, fill, text)


def _command_sections(data: dict) -> dict[str, Any]:
    """``command:`` and ``vars:``: a command job instead of ``train:`` (exactly one of the two).

    Items are argv, never read by a shell (the script quotes each one), so any text is fine
    but NUL, which no argv can hold.
    """
    if "command" not in data:
        if data.get("vars") is not None:
            raise SpecError("vars", "only for a command job (allowed: vars with command: [program, args...])")
        return {}
    if data.get("train") is not None:
        raise SpecError("command", "a spec has either train: (the built-in trainer) or command: (your program), "
                        "not both (remove one)")
    items = data["command"]
    if isinstance(items, str):
        raise SpecError("command", "must be a list of arguments, e.g. [python, train.py, --lr, \"{lr}\"] "
                        "(a string would need a shell to split it)")
    if not isinstance(items, list) or not items:
        raise SpecError("command", f"must be a non-empty list of arguments (got {_kind(items)})")
    if len(items) > MAX_COMMAND_ITEMS:
        raise SpecError("command", f"has {len(items)} items (allowed: at most {MAX_COMMAND_ITEMS})")
    command = []
    for i, item in enumerate(items):
        if isinstance(item, bool) or not isinstance(item, (str, int, float)):
            raise SpecError(f"command[{i}]", f"must be a string or number (got {_kind(item)})")
        command.append(_argv_text(str(item), f"command[{i}]"))
    if not command[0].strip():
        raise SpecError("command[0]", "is empty (allowed: a program name or path)")
    raw_vars = data.get("vars") or {}
    if not isinstance(raw_vars, dict):
        raise SpecError("vars", f"must be a mapping of name: value (got {_kind(raw_vars)})")
    if len(raw_vars) > MAX_LIST_ITEMS:
        raise SpecError("vars", f"has {len(raw_vars)} entries (allowed: at most {MAX_LIST_ITEMS})")
    pairs = []
    for name, value in raw_vars.items():
        key = f"vars.{cut(str(name), 60)}"
        if not isinstance(name, str) or not _is_word(name, _VAR_NAME_WORD):
            raise SpecError(key, "invalid name (allowed: letters, digits, '_', not starting with a digit)")
        if not isinstance(value, (str, int, float)):
            raise SpecError(key, f"must be a string, number or boolean (got {_kind(value)})")
        if isinstance(value, str):
            _argv_text(value, key)
        pairs.append((name, value))
    values = dict(pairs)
    argv = [render_placeholders(item, values, f"command[{i}]") for i, item in enumerate(command)]
    _check_program(argv)
    _check_argv_size(argv)
    resources = data.get("resources") if isinstance(data.get("resources"), dict) else {}
    for key in ("nodes", "tasks_per_node"):  # validated as counts by _resources_section already
        if resources.get(key, 1) != 1:
            raise SpecError(f"resources.{key}", f"is {_show(resources[key])} (allowed: 1 for a command job, which "
                            "runs one process; a program that wants several ranks starts them itself)")
    return {"command": tuple(command), "vars": tuple(pairs)}


def _check_program(argv: list[str]) -> None:
    """``command[0]`` once its placeholders are filled: a program, never what bash runs itself.

    The script starts it with ``exec --`` (no function, builtin or keyword), and the local
    executor with ``execvp``; a builtin's name would then be looked up as a program on
    ``PATH`` by both. Refused here instead, so that ``[eval, ...]`` or a ``{prog}`` that is
    ``eval`` never gets that far (a path such as ``./eval`` is a file, and stays allowed).
    """
    from cluster.shell_words import shell_word_kind

    program = argv[0]
    if not program.strip():
        raise SpecError("command[0]", "is empty once its placeholders are filled (allowed: a program name or path)")
    kind = shell_word_kind(program)
    if kind:
        raise SpecError("command[0]", f"{_show(program, 20)} is {kind}, not a program (allowed: a program "
                        "name or path; no shell runs the command, write e.g. /bin/echo for the program)")


MAX_ARG_BYTES = 32 * 4096 - 1
"""Linux's limit for one argument (MAX_ARG_STRLEN, 32 pages, with its NUL): execve refuses more."""
ENV_RESERVE_BYTES = 256 * 1024
"""Room left in the system's argument limit for the job's environment (the scheduler's and the
toolkit's variables, and more than this machine's own environment)."""


def argv_limit(environ: Mapping[str, str] | None = None) -> int:
    """The most bytes a command job's argv may take: ``execve`` counts the arguments and the
    environment against ``ARG_MAX`` together (each string with its NUL, and a pointer per string).
    The environment here is the login node's, so :data:`ENV_RESERVE_BYTES` more are kept free."""
    env = os.environ if environ is None else environ
    try:
        arg_max = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError, AttributeError):  # not POSIX: Linux's usual value
        arg_max = 2 * 1024 * 1024
    env_bytes = sum(len(os.fsencode(k)) + len(os.fsencode(v)) + 2 + 8 for k, v in env.items())
    return max(arg_max - env_bytes - ENV_RESERVE_BYTES, 0)


def _check_argv_size(argv: list[str]) -> None:
    """The argv once placeholders are filled must fit ``execve``: each argument and all together."""
    total = 0
    for i, arg in enumerate(argv):
        size = len(arg.encode("utf-8", "surrogateescape"))
        if size > MAX_ARG_BYTES:
            raise SpecError(f"command[{i}]", f"is {size} bytes once its placeholders are filled (allowed: at most "
                            f"{MAX_ARG_BYTES}, the system's limit for one argument)")
        total += size + 1 + 8
    limit = argv_limit()
    if total > limit:
        raise SpecError("command", f"its {len(argv)} arguments take {total} bytes once the placeholders are filled "
                        f"(allowed: at most {limit}, the system's argument limit ARG_MAX less room for the "
                        "environment)")


def _argv_text(text: str, key: str) -> str:
    if "\x00" in text:
        raise SpecError(key, "contains a NUL character (allowed: any other text; no argument can hold NUL)")
    if len(text) > MAX_COMMAND_CHARS:
        raise SpecError(key, f"is {len(text)} characters long (allowed: at most {MAX_COMMAND_CHARS})")
    return text


def _check_sweep_point(spec: JobSpec, key: str, value: Any) -> None:
    data = spec.to_dict()
    data.pop("sweep", None)
    _set_dotted(data, key.split("."), value, key, spec.source)
    try:
        _build(data, spec.source)
    except SpecError as err:
        raise SpecError(f"sweep.{cut(key, 60)}", f"value {_show(value, 40)}: {err.message}") from None
