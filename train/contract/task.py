"""Finding a training task by its `train.task` reference and validating its `train.options`.

Standard library only: `cluster check` runs this on the login node, where torch is not
imported. It imports the task's module (which must itself not import torch at import
time, see `train.tasks`), takes the class, and checks the options against the class's
`Options` dataclass: unknown keys, types, and the class's own rules.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys
import types
import typing
from collections.abc import Mapping
from typing import Any

from train.contract import SpecError
from train.contract.record import Record

DEFAULT_TASK = "train.tasks.seed_convnet:SeedConvNet"
BUILTIN_TASKS = "train.tasks"
"""The package of the shipped tasks: ours, imported in-process also on the login node."""
REQUIRED_METHODS = ("data", "model", "loss")

def is_task_ref(ref: Any) -> bool:
    """"package.module:ClassName" of ASCII identifiers, exactly (no regular expression: none
    is compiled at import, and no trailing newline or non-ASCII letter gets through)."""
    if not isinstance(ref, str) or ref.count(":") != 1:
        return False
    module, _, attr = ref.partition(":")
    return all(part.isascii() and part.isidentifier() for part in (*module.split("."), attr))


def is_builtin_task(ref: str) -> bool:
    """A task of ours (``train.tasks.*``): the toolkit's package wins over the submit directory."""
    module = ref.partition(":")[0]
    return module == BUILTIN_TASKS or module.startswith(BUILTIN_TASKS + ".")


@dataclasses.dataclass(frozen=True, eq=False, repr=False)
class CheckedOptions(Record):
    """A task's options as its own ``Options`` validated them in the probe: what the login node
    keeps instead of an instance of a class it did not import (YAML-safe values, lists as
    tuples). The job builds the real instance from them (:func:`materialize_options`)."""

    task: str
    values: tuple[tuple[str, Any], ...]


def materialize_options(task: type, options: Any) -> Any:
    """The task's own ``Options`` instance for ``options`` as a spec holds them (a job whose spec
    was loaded with isolated imports holds :class:`CheckedOptions`)."""
    if isinstance(options, CheckedOptions):
        return build_options(task, options_to_dict(options))
    return options


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:150]}" if text else type(err).__name__


def _submit_dir_last() -> None:
    """Let a task module beside the spec be found, after everything installed.

    The toolkit's processes start without the current (submit) directory on ``sys.path``
    (``cluster.isolate``), so that a user's ``train.py`` cannot stand in for the toolkit; a
    task module of the user's own is still found there, last, as a fallback.
    """
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.append(cwd)


def resolve_task(ref: Any, key: str = "train.task") -> type:
    """The task class named by "package.module:Name"; every failure is one `SpecError`.

    Refused: a malformed reference, a module that cannot be imported (the error's first
    line is quoted), one that imports torch when imported (the login node must not), a
    missing attribute, and a class without the protocol's methods.
    """
    if not is_task_ref(ref):
        shown = repr(ref)[:70]
        raise SpecError(key, f"must be 'package.module:ClassName' (got {shown})")
    module_name, _, attr = ref.partition(":")
    had_torch = "torch" in sys.modules
    _submit_dir_last()
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # anything the user's module raises: one line, not a traceback
        raise SpecError(key, f"cannot import {module_name!r} ({_first_line(err)}); is its package installed or "
                             "on PYTHONPATH, here and in the job (environment.env)?") from None
    if not had_torch and "torch" in sys.modules:
        raise SpecError(key, f"{module_name!r} imports torch when it is imported: import torch inside the task's "
                             "methods, so that cluster check can validate it on the login node")
    task = getattr(module, attr, None)
    if task is None:
        raise SpecError(key, f"module {module_name!r} has no attribute {attr!r}")
    if not isinstance(task, type):
        raise SpecError(key, f"{ref} is not a class (got {type(task).__name__})")
    missing = [m for m in REQUIRED_METHODS if not callable(getattr(task, m, None))]
    if missing:
        raise SpecError(key, f"{ref} lacks the task method(s) {', '.join(missing)} (see train.tasks)")
    options = getattr(task, "Options", None)
    if options is not None and not dataclasses.is_dataclass(options):
        raise SpecError(key, f"{ref}.Options must be a dataclass (got {type(options).__name__})")
    return task


def _type_error(key: str, expected: Any, value: Any) -> SpecError:
    names = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
    allowed = [names.get(t, getattr(t, "__name__", str(t))) for t in expected if t is not type(None)]
    if type(None) in expected:
        allowed.append("null")
    return SpecError(key, f"must be {' or '.join(allowed)} (got {repr(value)[:70]})")


def _convert(key: str, hint: Any, value: Any) -> Any:
    """A YAML value as the field's type says: int, float (ints and "1e-3" accepted), bool,
    str, a union of those with None, or tuple[X, ...] (from a list)."""
    origin = typing.get_origin(hint)
    if origin is tuple:
        item = typing.get_args(hint)[0]
        if not isinstance(value, (list, tuple)):
            raise SpecError(key, f"must be a list (got {repr(value)[:70]})")
        return tuple(_convert(f"{key}[{i}]", item, v) for i, v in enumerate(value))
    expected = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in expected:
        return None
    if bool in expected and isinstance(value, bool):
        return value
    if isinstance(value, bool):
        raise _type_error(key, expected, value)
    if int in expected and isinstance(value, int):
        return value
    if float in expected:
        if isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                pass
        if isinstance(value, (int, float)) and math.isfinite(value):
            return float(value)
    if str in expected and isinstance(value, str):
        return value
    raise _type_error(key, expected, value)


def build_options(task: type, given: Any, prefix: str = "train.options") -> Any:
    """The task's `Options` instance from the spec's mapping (None for a task without
    options). Each key must be a field; values are converted by the field's type; then
    the dataclass's own `__post_init__` may raise `SpecError(field, message)` (named under
    `prefix`) or `ValueError(message)` (named `prefix`)."""
    options = getattr(task, "Options", None)
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        raise SpecError(prefix, f"must be a mapping of keys to values (got {type(given).__name__})")
    if options is None:
        if given:
            raise SpecError(prefix, f"{task.__module__}:{task.__name__} takes no options")
        return None
    fields = [f for f in dataclasses.fields(options) if f.init]
    names = [f.name for f in fields]
    hints = typing.get_type_hints(options)
    kwargs = {}
    for k, v in given.items():
        if k not in names:
            raise SpecError(f"{prefix}.{str(k)[:70]}", f"unknown option (valid: {', '.join(names) or 'none'})")
        kwargs[k] = _convert(f"{prefix}.{k}", hints[k], v)
    try:
        return options(**kwargs)
    except SpecError as err:
        raise SpecError(f"{prefix}.{err.key}" if err.key else prefix, err.message) from None
    except (ValueError, TypeError) as err:
        raise SpecError(prefix, str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def options_to_dict(options: Any) -> dict:
    """The options as YAML-safe values (tuples become lists)."""
    if options is None:
        return {}
    values = options.values if isinstance(options, CheckedOptions) else dataclasses.asdict(options).items()
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values}
