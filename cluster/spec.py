"""The job spec: one typed, frozen description of everything a training job needs.

A spec is a YAML file under ``jobs/``. It may ``extends:`` a site defaults file
(a path relative to the spec), which is deep-merged *under* it, and the command
line may override any key with ``--set dotted.key=value``. Every mistake ends in
one :class:`~cluster.errors.SpecError` naming the file and the dotted key.

This module is on the login-node path: it imports yaml and the stdlib only.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import yaml

from cluster.errors import SpecError
from train.contract import NOT_POSITIVE, parse_walltime
from train.contract.config import TrainConfig

SCHEDULER_KINDS = ("auto", "slurm", "pbs", "local")
PBS_FLAVORS = ("pbspro", "torque")
SLURM_GPU_FLAGS = ("gres", "gpus", "gpus-per-node")

# Values that end up inside #SBATCH/#PBS lines or unquoted shell words.
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_QUEUE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")
_MODULE_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+/-]*$")
_ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Paths may use $VAR and ${VAR}; nothing that runs a command or ends one.
_PATH_FORBIDDEN = ("$(", "`", ";", "&", "|", "<", ">", '"', "\\", "'")
_PATH_VAR_RE = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*\}")
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_NOT_TAB_RE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# ---------------------------------------------------------------- YAML


class SpecLoader(yaml.SafeLoader):
    """Safe loading, minus YAML 1.1's base-60 numbers: ``time: 1:30:00`` must stay a string.

    PyYAML reads ``1:30:00`` as the integer 5400 and ``1e-3`` as a string; the first
    would silently turn a walltime into minutes, so plain scalars follow YAML 1.2 here.
    """


SpecLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers
            if tag not in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float")]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:int",
    re.compile(r"^(?:[-+]?0b[0-1_]+|[-+]?0o[0-7_]+|[-+]?[0-9][0-9_]*|[-+]?0x[0-9a-fA-F_]+)$"),
    list("-+0123456789"),
)
SpecLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?(?:[eE][-+]?[0-9]+)?"
               r"|\.[0-9_]+(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def parse_yaml(text: str) -> Any:
    """Parse YAML text with :class:`SpecLoader` (safe: no tags that construct objects)."""
    return yaml.load(text, Loader=SpecLoader)  # noqa: S506 - SpecLoader is a SafeLoader


# ---------------------------------------------------------------- units


_NOT_POSITIVE = NOT_POSITIVE


def format_walltime(seconds: int) -> str:
    """``HH:MM:SS`` (hours may exceed 24), the form every scheduler accepts."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}"


_MEM_UNITS = {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}


def parse_memory(value: Any) -> int:
    """Return mebibytes for ``16G``, ``16GB``, ``16GiB``, ``500M``, ``2T`` or a plain number of GB.

    Raises ValueError like :func:`parse_walltime`. A bare ``B`` is refused: ``16B``
    would otherwise read as 16 GB.
    """
    if isinstance(value, bool):
        raise ValueError
    if isinstance(value, (int, float)):
        number, unit = float(value), "g"
    elif isinstance(value, str):
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(?:([kKmMgGtT])(?:[iI]?[bB])?)?", value.strip())
        if not match:
            raise ValueError
        number, unit = float(match.group(1)), (match.group(2) or "g").lower()
    else:
        raise ValueError
    if number != number or number in (float("inf"), float("-inf")):
        raise ValueError
    if number <= 0:
        raise ValueError(_NOT_POSITIVE)
    mb = int(round(number * _MEM_UNITS[unit]))
    if mb <= 0:
        raise ValueError("must be at least 1M")
    return mb


def format_memory(mb: int) -> str:
    """``16G`` when whole gibibytes, else ``500M``."""
    return f"{mb // 1024}G" if mb % 1024 == 0 else f"{mb}M"


# ---------------------------------------------------------------- sections


@dataclass(frozen=True)
class SchedulerConfig:
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


@dataclass(frozen=True)
class Resources:
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


@dataclass(frozen=True)
class Environment:
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


@dataclass(frozen=True)
class Output:
    runs_dir: str = "runs"
    """Where run directories are created (relative paths: to the current directory)."""


@dataclass(frozen=True)
class JobSpec:
    """A fully resolved job spec."""

    name: str
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    resources: Resources = field(default_factory=Resources)
    environment: Environment = field(default_factory=Environment)
    output: Output = field(default_factory=Output)
    train: TrainConfig = field(default_factory=TrainConfig)
    sweep: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    """Grid of dotted keys to value lists; one array task per combination."""
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
        if self.sweep:
            data["sweep"] = {key: list(values) for key, values in self.sweep}
        return data

    def to_yaml(self) -> str:
        return dump_yaml(self.to_dict())

    @property
    def total_tasks(self) -> int:
        return self.resources.nodes * self.resources.tasks_per_node


def dump_yaml(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, default_flow_style=False, allow_unicode=True)


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
    """A copy of ``spec`` with dotted keys set to already-parsed values (sweeps use this)."""
    data = spec.to_dict()
    data.pop("sweep", None)
    for key, value in assignments.items():
        _set_dotted(data, key.split("."), value, key, spec.source)
    return spec_from_dict(data, source=spec.source)


def _read_yaml(path: Path) -> dict[str, Any]:
    where = str(path)
    if path.is_dir():
        raise SpecError("", "is a directory (expected a YAML job spec file)", where)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError("", "file not found", where) from None
    except OSError as err:
        raise SpecError("", f"cannot read ({err.strerror})", where) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start:err.start + 1].hex()
        raise SpecError("", f"not valid UTF-8 (byte 0x{bad} at offset {err.start}; save the file as UTF-8)",
                        where) from None
    try:
        doc = parse_yaml(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        if isinstance(err, yaml.reader.ReaderError):  # a raw control character: no mark, a position
            line = f"line {text.count(chr(10), 0, err.position) + 1}: "
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, yaml.constructor.ConstructorError):
            problem = f"{problem} (YAML tags that construct objects are not allowed)"
        raise SpecError("", f"{line}YAML error: {problem}", where) from None
    if doc is None:
        raise SpecError("", "empty file (expected a mapping of spec keys)", where)
    if not isinstance(doc, dict):
        raise SpecError("", f"top level must be a mapping of spec keys (got {_kind(doc)})", where)
    for key in doc:
        if not isinstance(key, str):
            raise SpecError(str(key), "keys must be strings", where)
    return doc


def _load_with_extends(path: Path, chain: tuple[Path, ...], names: tuple[str, ...]
                       ) -> tuple[dict, dict[str, str]]:
    """``chain`` holds the resolved files that extend this one (to find cycles), ``names`` the same as written."""
    resolved = path.resolve()
    if resolved in chain:
        cycle = " -> ".join((*names, str(path)))
        raise SpecError("extends", f"cycle {cycle} (a file must not extend itself, directly or not)", names[-1])
    doc = _read_yaml(path)
    base_ref = doc.pop("extends", None)
    origins: dict[str, str] = {}
    if base_ref is None:
        merged: dict = {}
    else:
        if not isinstance(base_ref, str) or not base_ref.strip():
            raise SpecError("extends", f"must be a path to a site defaults file (got {_kind(base_ref)}; "
                            "allowed: a path relative to this file)", str(path))
        base_path = path.parent / base_ref
        if not base_path.exists():
            raise SpecError("extends", f"file not found: {base_ref} (looked for {base_path}; "
                            "allowed: a path relative to this file)", str(path))
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
    key = re.sub(r"\[\d+\]", "", key)  # environment.modules[1] was set as environment.modules
    if not key:
        return default
    related = [file for name, file in origins.items()
               if name == key or name.startswith(key + ".") or key.startswith(name + ".")]
    return related[-1] if related else default


def _apply_override(data: dict, origins: dict[str, str], item: str, file: str) -> None:
    where = f"{file} (--set {item})"
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key or not all(key.split(".")):
        raise SpecError("", "expected dotted.key=value (e.g. --set resources.time=01:00:00)", where)
    try:
        value = parse_yaml(text) if text.strip() else None
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
            raise SpecError(".".join(parts[: i + 1]), f"is {_kind(child)}, not a mapping "
                            f"(cannot set {key} inside it)", where)
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
            raise SpecError(dotted, f"unknown key (valid: {', '.join(valid)})")


def _choice(section: Mapping, prefix: str, key: str, choices: Sequence[str], default: str) -> str:
    value = section.get(key, default)
    if value not in choices:
        raise SpecError(f"{prefix}.{key}", f"unknown value {value!r} (allowed: {', '.join(choices)})")
    return value


def _count(section: Mapping, prefix: str, key: str, default: int, minimum: int = 1) -> int:
    value = section.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        need = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"
        raise SpecError(f"{prefix}.{key}", f"must be {need} (got {_show(value)})")
    return value


def _unit(value: Any, key: str, parse: Callable[[Any], int], allowed: str) -> int:
    try:
        return parse(value)
    except ValueError as err:
        if str(err):
            raise SpecError(key, f"{err} (got {_show(value)}; allowed: {allowed})") from None
        raise SpecError(key, f"cannot parse {_show(value)} (allowed: {allowed})") from None


def _show(value: Any) -> str:
    """A value as the user wrote it in YAML (``true``, not ``True``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)


def _safe_string(value: Any, key: str, pattern: re.Pattern[str], allowed: str) -> str:
    if not isinstance(value, str):
        raise SpecError(key, f"must be a string (got {_kind(value)})")
    if _CONTROL_RE.search(value):
        raise SpecError(key, f"contains a newline or control character (allowed: {allowed})")
    if not pattern.match(value):
        raise SpecError(key, f"invalid value {value!r} (allowed: {allowed})")
    return value


def _safe_path(value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise SpecError(key, f"must be a path string (got {_kind(value)})")
    if not value.strip():
        raise SpecError(key, "is empty (allowed: a path, $VAR or ${VAR})")
    if _CONTROL_RE.search(value):
        raise SpecError(key, "contains a newline or control character (allowed: a path, $VAR or ${VAR})")
    for bad in _PATH_FORBIDDEN:
        if bad in value:
            raise SpecError(key, f"contains {bad!r} (allowed: a path, $VAR or ${{VAR}}; no commands or quotes)")
    # A stray brace would end the ${CLUSTER_RUN_DIR:-...} expansion the script wraps runs_dir in.
    if re.search(r"[{}]", _PATH_VAR_RE.sub("", value)):
        raise SpecError(key, "contains '{' or '}' outside ${VAR} (allowed: a path, $VAR or ${VAR})")
    return value


def _string_list(value: Any, key: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        raise SpecError(key, f"must be a list of strings (got {_kind(value)})")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise SpecError(f"{key}[{i}]", f"must be a string (got {_kind(item)})")
        if _CONTROL_NOT_TAB_RE.search(item):
            raise SpecError(f"{key}[{i}]", "contains a newline or control character (allowed: one line per item)")
    return tuple(value)


def _build(data: dict, source: str) -> JobSpec:
    top_keys = ("name", "scheduler", "resources", "environment", "output", "train", "sweep")
    _check_keys(data, "", top_keys)
    if "name" not in data:
        raise SpecError("name", "missing (a job name: letters, digits, '.', '_', '-')")
    name = _safe_string(data["name"], "name", _NAME_RE, "letters, digits, '.', '_', '-', at most 64")

    s = _section(data, "scheduler", (f.name for f in dataclasses.fields(SchedulerConfig)))
    scheduler = SchedulerConfig(
        kind=_choice(s, "scheduler", "kind", SCHEDULER_KINDS, "auto"),
        pbs_flavor=_choice(s, "scheduler", "pbs_flavor", PBS_FLAVORS, "pbspro"),
        slurm_gpu_flag=_choice(s, "scheduler", "slurm_gpu_flag", SLURM_GPU_FLAGS, "gres"),
        extra_directives=_string_list(s.get("extra_directives"), "scheduler.extra_directives"),
        skip_directives=_string_list(s.get("skip_directives"), "scheduler.skip_directives"),
        max_requeues=_count(s, "scheduler", "max_requeues", 3, minimum=0),
        signal_seconds=_count(s, "scheduler", "signal_seconds", 120, minimum=0),
    )

    r = _section(data, "resources", ("queue", "account", "nodes", "tasks_per_node", "gpus_per_node",
                                     "cpus_per_task", "mem", "time"))
    for key in ("queue", "account"):
        if r.get(key) is not None:
            _safe_string(r[key], f"resources.{key}", _QUEUE_RE, "letters, digits, '.', '_', '-', '@'")
    mem_mb = time_seconds = None
    if r.get("mem") is not None:
        mem_mb = _unit(r["mem"], "resources.mem", parse_memory,
                       "16G, 16GB, 16GiB, 500M, or a plain number of GB")
    if r.get("time") is not None:
        time_seconds = _unit(r["time"], "resources.time", parse_walltime,
                             "HH:MM:SS, D-HH:MM:SS, or minutes")
    resources = Resources(
        queue=r.get("queue"),
        account=r.get("account"),
        nodes=_count(r, "resources", "nodes", 1),
        tasks_per_node=_count(r, "resources", "tasks_per_node", 1),
        gpus_per_node=_count(r, "resources", "gpus_per_node", 0, minimum=0),
        cpus_per_task=_count(r, "resources", "cpus_per_task", 1),
        mem_mb=mem_mb,
        time_seconds=time_seconds,
    )

    e = _section(data, "environment", ("modules", "tmpdir", "setup", "env", "python"))
    modules = _string_list(e.get("modules"), "environment.modules")
    for i, module in enumerate(modules):
        _safe_string(module, f"environment.modules[{i}]", _MODULE_RE, "a module name like cuda/11.1")
    env_map = e.get("env") or {}
    if not isinstance(env_map, dict):
        raise SpecError("environment.env", f"must be a mapping of NAME: value (got {_kind(env_map)})")
    env_pairs = []
    for var, value in env_map.items():
        _safe_string(var, f"environment.env.{var}", _ENV_NAME_RE, "NAME of letters, digits, '_'")
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise SpecError(f"environment.env.{var}", f"must be a string or number (got {_kind(value)})")
        env_pairs.append((var, _safe_path(str(value), f"environment.env.{var}")))
    environment = Environment(
        modules=modules,
        tmpdir=_safe_path(e["tmpdir"], "environment.tmpdir") if e.get("tmpdir") is not None
        else (None if "tmpdir" in e else "$HOME/tmp"),
        setup=_string_list(e.get("setup"), "environment.setup"),
        env=tuple(env_pairs),
        python=_safe_path(e["python"], "environment.python") if e.get("python") is not None else None,
    )

    o = _section(data, "output", ("runs_dir",))
    output = Output(runs_dir=_safe_path(o.get("runs_dir", "runs"), "output.runs_dir"))

    train_data = data.get("train")
    if train_data is not None and not isinstance(train_data, dict):
        raise SpecError("train", f"must be a mapping (got {_kind(train_data)})")
    train = TrainConfig.from_dict(train_data or {})

    sweep = _parse_sweep(data.get("sweep"))
    spec = JobSpec(name=name, scheduler=scheduler, resources=resources, environment=environment,
                   output=output, train=train, sweep=sweep, source=source)
    for key, values in sweep:  # every point must be a valid spec
        for value in values:
            _check_sweep_point(spec, key, value)
    return spec


def _parse_sweep(value: Any) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not value:
        raise SpecError("sweep", "must be a mapping of dotted.key: [values] (e.g. train.lr: [0.001, 0.0003])")
    grid = []
    for key, values in value.items():
        if not isinstance(key, str) or key.split(".")[0] != "train":
            # One sweep is one array job, whose tasks share the job's resources and environment.
            raise SpecError(f"sweep.{key}", "sweep keys must be dotted keys under train "
                            "(the tasks of one array job share its resources)")
        if not isinstance(values, list) or not values:
            raise SpecError(f"sweep.{key}", f"must be a non-empty list of values (got {_kind(values)})")
        grid.append((key, tuple(values)))
    return tuple(grid)


def _check_sweep_point(spec: JobSpec, key: str, value: Any) -> None:
    data = spec.to_dict()
    data.pop("sweep", None)
    _set_dotted(data, key.split("."), value, key, spec.source)
    try:
        _build(data, spec.source)
    except SpecError as err:
        raise SpecError(f"sweep.{key}", f"value {value!r}: {err.message}") from None
