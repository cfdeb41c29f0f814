"""Bad input ends in one line on stderr, ``FILE: dotted.key: what is wrong (what is allowed)``, exit 2.

Each case writes its spec (and any ``extends`` files) into a fresh directory, runs
``cluster check`` and ``cluster render -o`` in-process and compares stderr with the
exact message; ``render -o`` must leave the directory as it was. A few cases run the
console script as a real subprocess, to show that no traceback reaches the user.
Also here: the units (walltime, memory), the YAML loader, the ``check`` round trip,
and how ``extends`` and ``--set`` combine.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cluster.cli import main
from cluster.spec import (
    format_memory,
    format_walltime,
    load_spec,
    parse_memory,
    parse_walltime,
    parse_yaml,
)

REPO = Path(__file__).resolve().parents[2]
JOBS = sorted((REPO / "jobs").glob("*.yaml"))

DIR = object()
"""Stands for "make a directory here" in a case's files."""

TOP_KEYS = "name, scheduler, resources, environment, output, train, command, vars, sweep"
RESOURCE_KEYS = "queue, account, nodes, tasks_per_node, gpus_per_node, cpus_per_task, mem, time"
SCHEDULER_KEYS = "kind, pbs_flavor, slurm_gpu_flag, extra_directives, skip_directives, max_requeues, signal_seconds, max_node_failures, continuation"
MEM_ALLOWED = "allowed: 16G, 16GB, 16GiB, 500M, or a plain number of GB"
TIME_ALLOWED = "allowed: HH:MM:SS, D-HH:MM:SS, or minutes"
NAME_ALLOWED = "allowed: letters, digits, '.', '_', '-', at most 64"
QUEUE_ALLOWED = "allowed: letters, digits, '.', '_', '-', '@'"
MODULE_ALLOWED = "allowed: a module name like cuda/11.1"
PATH_ALLOWED = "allowed: a path, $VAR or ${VAR}"
PATH_NO_COMMANDS = "allowed: a path, $VAR or ${VAR}; no commands or quotes"
CONTROL = "contains a newline or control character"


def case(id: str, files: dict[str, object] | str, message: str, *args: str, spec: str = "job.yaml"):
    """One bad-input case: ``files`` (or the text of job.yaml), the extra CLI args, the exact message."""
    if isinstance(files, str):
        files = {"job.yaml": files}
    return pytest.param(files, spec, list(args), message, id=id)


def job(body: str) -> str:
    """A valid job name plus ``body`` (YAML)."""
    return "name: j\n" + body


CASES = [
    # --- unknown keys: every message lists the valid ones
    case("unknown-top-key", job("bogus: 1\n"), f"job.yaml: bogus: unknown key (valid: {TOP_KEYS})"),
    case("unknown-resources-key", job("resources: {gpus: 1}\n"),
         f"job.yaml: resources.gpus: unknown key (valid: {RESOURCE_KEYS})"),
    case("bad-continuation", job("scheduler: {continuation: resubmit}\n"),
         "job.yaml: scheduler.continuation: unknown value 'resubmit' (allowed: requeue, chain)"),
    case("unknown-scheduler-key", job("scheduler: {type: slurm}\n"),
         f"job.yaml: scheduler.type: unknown key (valid: {SCHEDULER_KEYS})"),
    case("unknown-environment-key", job("environment: {module: [cuda]}\n"),
         "job.yaml: environment.module: unknown key (valid: modules, tmpdir, setup, env, python, venv, "
         "requirements, requirements_file)"),
    case("unknown-output-key", job("output: {dir: runs}\n"), "job.yaml: output.dir: unknown key (valid: runs_dir)"),
    case("unknown-train-key", job("train: {epoch: 3}\n"),
         "job.yaml: train.epoch: unknown key (valid: seed, epochs, batch_size, lr, device, threads, data, sampler, checkpoint, "
         "task, options, optimizer, lr_schedule, grad_clip, precision, tensorboard)"),
    case("unknown-key-with-newline", job('"a\\nb": 1\n'),
         f"job.yaml: a\\nb: unknown key (valid: {TOP_KEYS})"),
    case("missing-name", "resources: {nodes: 1}\n",
         "job.yaml: name: missing (a job name: letters, digits, '.', '_', '-')"),
    # --- wrong types
    case("name-not-string", "name: 5\n", "job.yaml: name: must be a string (got an integer)"),
    case("section-not-mapping", job("resources: [1, 2]\n"), "job.yaml: resources: must be a mapping (got a list)"),
    case("count-not-integer", job("resources: {nodes: two}\n"),
         "job.yaml: resources.nodes: must be a positive integer (got 'two')"),
    case("count-float", job("resources: {cpus_per_task: 1.5}\n"),
         "job.yaml: resources.cpus_per_task: must be a positive integer (got 1.5)"),
    case("count-boolean", job("resources: {nodes: true}\n"),
         "job.yaml: resources.nodes: must be a positive integer (got true)"),
    case("modules-not-list", job("environment: {modules: 5}\n"),
         "job.yaml: environment.modules: must be a list of strings (got an integer)"),
    case("module-not-string", job("environment: {modules: [cuda/11.1, 5]}\n"),
         "job.yaml: environment.modules[1]: must be a string (got an integer)"),
    case("env-not-mapping", job("environment: {env: [A]}\n"),
         "job.yaml: environment.env: must be a mapping of NAME: value (got a list)"),
    case("tmpdir-not-string", job("environment: {tmpdir: 5}\n"),
         "job.yaml: environment.tmpdir: must be a path string (got an integer)"),
    case("tmpdir-empty", job('environment: {tmpdir: ""}\n'), f"job.yaml: environment.tmpdir: is empty ({PATH_ALLOWED})"),
    case("train-not-mapping", job("train: 5\n"), "job.yaml: train: must be a mapping (got an integer)"),
    case("train-wrong-type", job("train: {epochs: many}\n"),
         "job.yaml: train.epochs: must be a positive integer (got 'many')"),
    # --- zero and negative counts
    case("nodes-zero", job("resources: {nodes: 0}\n"), "job.yaml: resources.nodes: must be a positive integer (got 0)"),
    case("tasks-negative", job("resources: {tasks_per_node: -2}\n"),
         "job.yaml: resources.tasks_per_node: must be a positive integer (got -2)"),
    case("cpus-zero", job("resources: {cpus_per_task: 0}\n"),
         "job.yaml: resources.cpus_per_task: must be a positive integer (got 0)"),
    case("gpus-negative", job("resources: {gpus_per_node: -1}\n"),
         "job.yaml: resources.gpus_per_node: must be an integer >= 0 (got -1)"),
    case("requeues-negative", job("scheduler: {max_requeues: -1}\n"),
         "job.yaml: scheduler.max_requeues: must be an integer >= 0 (got -1)"),
    # --- walltime and memory
    case("walltime-unparsable", job("resources: {time: 2h}\n"), f"job.yaml: resources.time: cannot parse '2h' ({TIME_ALLOWED})"),
    case("walltime-bad-minutes", job('resources: {time: "1:75:00"}\n'),
         f"job.yaml: resources.time: cannot parse '1:75:00' ({TIME_ALLOWED})"),
    case("walltime-mm-ss", job('resources: {time: "30:00"}\n'),
         f"job.yaml: resources.time: cannot parse '30:00' ({TIME_ALLOWED})"),
    case("walltime-zero", job('resources: {time: "00:00:00"}\n'),
         f"job.yaml: resources.time: must be more than zero (got '00:00:00'; {TIME_ALLOWED})"),
    case("walltime-negative", job("resources: {time: -5}\n"),
         f"job.yaml: resources.time: must be more than zero (got -5; {TIME_ALLOWED})"),
    case("memory-unparsable", job("resources: {mem: lots}\n"), f"job.yaml: resources.mem: cannot parse 'lots' ({MEM_ALLOWED})"),
    case("memory-bytes-unit", job("resources: {mem: 16B}\n"), f"job.yaml: resources.mem: cannot parse '16B' ({MEM_ALLOWED})"),
    case("memory-zero", job("resources: {mem: 0}\n"), f"job.yaml: resources.mem: must be more than zero (got 0; {MEM_ALLOWED})"),
    case("memory-too-small", job("resources: {mem: 1K}\n"),
         f"job.yaml: resources.mem: must be at least 1M (got '1K'; {MEM_ALLOWED})"),
    # --- scheduler and flavour
    case("unknown-scheduler", job("scheduler: {kind: sge}\n"),
         "job.yaml: scheduler.kind: unknown value 'sge' (allowed: auto, slurm, pbs, local)"),
    case("unknown-pbs-flavor", job("scheduler: {pbs_flavor: lsf}\n"),
         "job.yaml: scheduler.pbs_flavor: unknown value 'lsf' (allowed: pbspro, torque)"),
    case("unknown-slurm-gpu-flag", job("scheduler: {slurm_gpu_flag: gpu}\n"),
         "job.yaml: scheduler.slurm_gpu_flag: unknown value 'gpu' (allowed: gres, gpus, gpus-per-node)"),
    # --- extends
    case("extends-cycle", {"job.yaml": "extends: a.yaml\nname: j\n", "a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"},
         "b.yaml: extends: cycle job.yaml -> a.yaml -> b.yaml -> a.yaml (a file must not extend itself, directly or not)"),
    case("extends-itself", "extends: job.yaml\nname: j\n",
         "job.yaml: extends: cycle job.yaml -> job.yaml (a file must not extend itself, directly or not)"),
    case("extends-missing-file", job("extends: sites/nope.yaml\n"),
         "job.yaml: extends: file not found: sites/nope.yaml (looked for sites/nope.yaml; "
         "allowed: a path relative to this file)"),
    case("extends-relative-to-spec", {"jobs/job.yaml": job("extends: site.yaml\n"), "site.yaml": "resources: {nodes: 1}\n"},
         "jobs/job.yaml: extends: file not found: site.yaml (looked for jobs/site.yaml; allowed: a path relative to this file)",
         spec="jobs/job.yaml"),
    case("extends-not-string", job("extends: [a.yaml]\n"),
         "job.yaml: extends: must be a path to a site defaults file (got a list; allowed: a path relative to this file)"),
    case("extends-directory", {"job.yaml": job("extends: sites\n"), "sites": DIR},
         "sites: is a directory (expected a YAML job spec file)"),
    case("error-in-site-file", {"job.yaml": job("extends: sites/site.yaml\n"), "sites/site.yaml": "resources: {gpu: 1}\n"},
         f"sites/site.yaml: resources.gpu: unknown key (valid: {RESOURCE_KEYS})"),
    case("bad-value-from-site-file",
         {"job.yaml": job("extends: sites/site.yaml\nresources: {nodes: 2}\n"), "sites/site.yaml": "resources: {queue: 'a;b'}\n"},
         f"sites/site.yaml: resources.queue: invalid value 'a;b' ({QUEUE_ALLOWED})"),
    case("site-file-yaml-error", {"job.yaml": job("extends: site.yaml\n"), "site.yaml": "resources: {nodes: 1\n"},
         "site.yaml: line 2: YAML error: expected ',' or '}', but got '<stream end>'"),
    # --- the file itself
    case("file-not-found", {}, "job.yaml: file not found"),
    case("empty-file", "", "job.yaml: empty file (expected a mapping of spec keys)"),
    case("only-comments", "# nothing yet\n", "job.yaml: empty file (expected a mapping of spec keys)"),
    case("directory", {"job.yaml": DIR}, "job.yaml: is a directory (expected a YAML job spec file)"),
    case("not-utf8", {"job.yaml": b"name: caf\xe9\n"},
         "job.yaml: not valid UTF-8 (byte 0xe9 at offset 9; save the file as UTF-8)"),
    case("yaml-syntax", job("resources:\n  nodes: 1\n   cpus: 2\n"),
         "job.yaml: line 4: YAML error: mapping values are not allowed here"),
    case("yaml-unclosed", job("resources: {nodes: 1\n"),
         "job.yaml: line 3: YAML error: expected ',' or '}', but got '<stream end>'"),
    case("yaml-tab", job("resources:\n\tnodes: 1\n"),
         "job.yaml: line 3: YAML error: found character '\\t' that cannot start any token"),
    case("yaml-raw-control-character", {"job.yaml": b"name: j\nresources: {queue: a\x01b}\n"},
         "job.yaml: line 2: YAML error: unacceptable character #x0001: special characters are not allowed"),
    case("yaml-python-object-tag", 'name: !!python/object/apply:os.system ["touch pwned"]\n',
         "job.yaml: line 1: YAML error: could not determine a constructor for the tag "
         "'tag:yaml.org,2002:python/object/apply:os.system' (YAML tags that construct objects are not allowed)"),
    case("yaml-python-name-tag", job("train: !!python/name:os.system\n"),
         "job.yaml: line 2: YAML error: could not determine a constructor for the tag "
         "'tag:yaml.org,2002:python/name:os.system' (YAML tags that construct objects are not allowed)"),
    case("yaml-local-tag", "name: !job j\n",
         "job.yaml: line 1: YAML error: could not determine a constructor for the tag '!job' "
         "(YAML tags that construct objects are not allowed)"),
    case("top-level-list", "- name: j\n", "job.yaml: top level must be a mapping of spec keys (got a list)"),
    case("top-level-scalar", "seed-convnet\n", "job.yaml: top level must be a mapping of spec keys (got a string)"),
    case("non-string-key", "name: j\n1: x\n", "job.yaml: 1: keys must be strings"),
    # --- values that would break or inject into the script
    case("name-newline", 'name: "j\\nrm -rf ~"\n', f"job.yaml: name: {CONTROL} ({NAME_ALLOWED})"),
    case("name-nul", 'name: "j\\0"\n', f"job.yaml: name: {CONTROL} ({NAME_ALLOWED})"),
    case("name-escape-character", 'name: "j\\e[31m"\n', f"job.yaml: name: {CONTROL} ({NAME_ALLOWED})"),
    case("name-semicolon", "name: 'j;id'\n", f"job.yaml: name: invalid value 'j;id' ({NAME_ALLOWED})"),
    case("name-command-substitution", "name: $(id)\n", f"job.yaml: name: invalid value '$(id)' ({NAME_ALLOWED})"),
    case("name-space", "name: my job\n", f"job.yaml: name: invalid value 'my job' ({NAME_ALLOWED})"),
    case("name-leading-dash", "name: -j\n", f"job.yaml: name: invalid value '-j' ({NAME_ALLOWED})"),
    case("name-too-long", f"name: {'a' * 65}\n", f"job.yaml: name: invalid value '{'a' * 65}' ({NAME_ALLOWED})"),
    case("queue-newline", job('resources: {queue: "gpu\\nX"}\n'), f"job.yaml: resources.queue: {CONTROL} ({QUEUE_ALLOWED})"),
    case("queue-semicolon", job("resources: {queue: 'gpu;reboot'}\n"),
         f"job.yaml: resources.queue: invalid value 'gpu;reboot' ({QUEUE_ALLOWED})"),
    case("account-space", job("resources: {account: a b}\n"),
         f"job.yaml: resources.account: invalid value 'a b' ({QUEUE_ALLOWED})"),
    case("account-backtick", job("resources: {account: '`id`'}\n"),
         f"job.yaml: resources.account: invalid value '`id`' ({QUEUE_ALLOWED})"),
    case("module-semicolon", job("environment: {modules: ['cuda/11.1;rm -rf ~']}\n"),
         f"job.yaml: environment.modules[0]: invalid value 'cuda/11.1;rm -rf ~' ({MODULE_ALLOWED})"),
    case("module-and", job("environment: {modules: [gcc, 'cuda && id']}\n"),
         f"job.yaml: environment.modules[1]: invalid value 'cuda && id' ({MODULE_ALLOWED})"),
    case("module-newline", job('environment: {modules: ["cuda\\nid"]}\n'),
         f"job.yaml: environment.modules[0]: {CONTROL} (allowed: one line per item)"),
    case("module-option", job("environment: {modules: [--force]}\n"),
         f"job.yaml: environment.modules[0]: invalid value '--force' ({MODULE_ALLOWED})"),
    case("tmpdir-command-substitution", job("environment: {tmpdir: $(whoami)}\n"),
         f"job.yaml: environment.tmpdir: contains '$(' ({PATH_NO_COMMANDS})"),
    case("tmpdir-backtick", job("environment: {tmpdir: '/tmp/`id`'}\n"),
         f"job.yaml: environment.tmpdir: contains '`' ({PATH_NO_COMMANDS})"),
    case("tmpdir-quote", job("environment: {tmpdir: '/tmp/\"x'}\n"),
         f"job.yaml: environment.tmpdir: contains '\"' ({PATH_NO_COMMANDS})"),
    case("tmpdir-newline", job('environment: {tmpdir: "/tmp\\nid"}\n'),
         f"job.yaml: environment.tmpdir: {CONTROL} ({PATH_ALLOWED})"),
    case("tmpdir-brace", job("environment: {tmpdir: '/tmp/a}b'}\n"),
         f"job.yaml: environment.tmpdir: contains '{{' or '}}' outside ${{VAR}} ({PATH_ALLOWED})"),
    case("runs-dir-pipe", job("output: {runs_dir: 'runs|sh'}\n"), f"job.yaml: output.runs_dir: contains '|' ({PATH_NO_COMMANDS})"),
    case("python-semicolon", job("environment: {python: 'python3;id'}\n"),
         f"job.yaml: environment.python: contains ';' ({PATH_NO_COMMANDS})"),
    case("env-value-command", job("environment: {env: {DATA: $(id)}}\n"),
         f"job.yaml: environment.env.DATA: contains '$(' ({PATH_NO_COMMANDS})"),
    case("env-name-space", job("environment: {env: {A B: x}}\n"),
         "job.yaml: environment.env.A B: invalid value 'A B' (allowed: NAME of letters, digits, '_')"),
    case("setup-newline", job('environment: {setup: ["source venv/bin/activate\\nid"]}\n'),
         f"job.yaml: environment.setup[0]: {CONTROL} (allowed: one line per item)"),
    case("extra-directive-nul", job('scheduler: {extra_directives: ["--constraint=a100\\0"]}\n'),
         f"job.yaml: scheduler.extra_directives[0]: {CONTROL} (allowed: one line per item)"),
    case("extra-directive-carriage-return", job('scheduler: {extra_directives: ["--a\\r--b"]}\n'),
         f"job.yaml: scheduler.extra_directives[0]: {CONTROL} (allowed: one line per item)"),
    # --- sweeps
    case("sweep-not-list", job("sweep: {train.lr: 0.1}\n"),
         "job.yaml: sweep.train.lr: must be a non-empty list of values (got a number)"),
    case("sweep-bad-point", job("sweep: {train.epochs: [1, 0]}\n"),
         "job.yaml: sweep.train.epochs: value 0: must be a positive integer (got 0)"),
    case("sweep-not-train", job("sweep: {resources.nodes: [1, 2]}\n"),
         "job.yaml: sweep.resources.nodes: sweep keys must be dotted keys under train "
         "(the tasks of one array job share its resources)"),
    # --- overrides: the message names the --set that caused it
    case("set-zero-count", job(""), "job.yaml (--set resources.nodes=0): resources.nodes: must be a positive integer (got 0)",
         "--set", "resources.nodes=0"),
    case("set-unknown-key", job(""), f"job.yaml (--set bogus.key=1): bogus: unknown key (valid: {TOP_KEYS})",
         "--set", "bogus.key=1"),
    case("set-unknown-nested-key", job(""),
         f"job.yaml (--set resources.gpu=1): resources.gpu: unknown key (valid: {RESOURCE_KEYS})", "--set", "resources.gpu=1"),
    case("set-no-equals", job(""), "job.yaml (--set noequals): expected dotted.key=value (e.g. --set resources.time=01:00:00)",
         "--set", "noequals"),
    case("set-no-key", job(""), "job.yaml (--set =1): expected dotted.key=value (e.g. --set resources.time=01:00:00)",
         "--set", "=1"),
    case("set-empty-part", job(""), "job.yaml (--set a..b=1): expected dotted.key=value (e.g. --set resources.time=01:00:00)",
         "--set", "a..b=1"),
    case("set-inside-scalar", job("resources: {nodes: 1}\n"),
         "job.yaml (--set resources.nodes.x=1): resources.nodes: is an integer, not a mapping "
         "(cannot set resources.nodes.x inside it)",
         "--set", "resources.nodes.x=1"),
    case("set-walltime", job(""), f"job.yaml (--set resources.time=soon): resources.time: cannot parse 'soon' ({TIME_ALLOWED})",
         "--set", "resources.time=soon"),
    case("set-injection-in-list", job(""),
         f"job.yaml (--set environment.modules=[gcc, 'x;id']): environment.modules[1]: invalid value 'x;id' ({MODULE_ALLOWED})",
         "--set", "environment.modules=[gcc, 'x;id']"),
    case("set-object-tag", job(""),
         "job.yaml (--set name=!!python/object/apply:os.system [id]): name: YAML tags that construct objects are not "
         "allowed (allowed: plain YAML values)", "--set", "name=!!python/object/apply:os.system [id]"),
    case("set-broken-mapping", job(""),
         "job.yaml (--set environment.env={A: ${X}}): environment.env: YAML error in the value: expected ',' or '}', "
         "but got '{' (quote items that hold special characters, e.g. [\"a: b\"])",
         "--set", "environment.env={A: ${X}}"),
    case("set-after-good-set", job(""),
         "job.yaml (--set resources.mem=16X): resources.mem: cannot parse '16X' "
         f"({MEM_ALLOWED})", "--set", "resources.nodes=2", "--set", "resources.mem=16X"),
]


def write_files(root: Path, files: dict[str, object]) -> None:
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if content is DIR:
            path.mkdir()
        elif isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(str(content), encoding="utf-8")


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


@pytest.mark.parametrize("files, spec, args, message", CASES)
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys, files, spec, args, message):
    monkeypatch.chdir(tmp_path)
    write_files(tmp_path, files)
    before = tree(tmp_path)

    assert main(["check", spec, *args]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", message + "\n")

    assert main(["render", spec, *args, "-o", "out/job.sh"]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", message + "\n")
    assert tree(tmp_path) == before, "render -o wrote something although the spec is bad"


def cluster_command() -> list[str]:
    """The installed console script when there is one (what users run), else ``python -m cluster.cli``."""
    script = Path(sys.executable).with_name("cluster")
    return [str(script)] if script.exists() else [sys.executable, "-m", "cluster.cli"]


@pytest.mark.parametrize("files, spec, args, message", [
    p for p in CASES if p.id in (
        "unknown-top-key", "not-utf8", "yaml-python-object-tag", "extends-cycle", "directory",
        "module-semicolon", "tmpdir-command-substitution", "set-zero-count", "set-no-equals",
    )
])
@pytest.mark.parametrize("command", [["check"], ["render", "-o", "job.sh"]], ids=["check", "render"])
def test_bad_input_in_a_real_process(tmp_path, files, spec, args, message, command):
    write_files(tmp_path, files)
    before = tree(tmp_path)
    proc = subprocess.run(cluster_command() + command + [spec, *args], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr == message + "\n"
    assert proc.stdout == ""
    assert tree(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


def test_unknown_scheduler_option_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text("name: j\n")
    with pytest.raises(SystemExit) as exit_info:
        main(["render", "job.yaml", "--scheduler", "sge", "-o", "job.sh"])
    assert exit_info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err == ("cluster render: argument --scheduler: invalid choice: 'sge' "
                   "(choose from 'slurm', 'pbs', 'pbspro', 'torque') (see cluster render --help)\n")
    assert not (tmp_path / "job.sh").exists()


def test_unwritable_output_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "job.yaml").write_text("name: j\n")
    (tmp_path / "out").mkdir()
    assert main(["render", "job.yaml", "-o", "out"]) == 1
    assert capsys.readouterr().err == "cluster render: cannot write out: is a directory (give a file name)\n"
    assert list((tmp_path / "out").iterdir()) == []


# ---------------------------------------------------------------- units


@pytest.mark.parametrize("value, seconds", [
    ("02:00:00", 7200),
    ("2:00:00", 7200),
    ("00:10:00", 600),
    ("100:00:00", 360000),
    ("1-00:00:00", 86400),
    ("2-03:04:05", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
    (90, 5400),
    ("90", 5400),
    (" 45 ", 2700),
])
def test_parse_walltime_accepts(value, seconds):
    assert parse_walltime(value) == seconds


@pytest.mark.parametrize("value", ["2h", "1:60:00", "1:00:60", "30:00", "1-2", "", "abc", 1.5, None, True, [1], "-5"])
def test_parse_walltime_refuses(value):
    with pytest.raises(ValueError, match="^$"):
        parse_walltime(value)


@pytest.mark.parametrize("value", [0, -1, "0", "00:00:00", "0-00:00:00"])
def test_parse_walltime_refuses_zero(value):
    with pytest.raises(ValueError, match="must be more than zero"):
        parse_walltime(value)


@pytest.mark.parametrize("seconds, text", [(7200, "02:00:00"), (600, "00:10:00"), (93784, "26:03:04"), (59, "00:00:59")])
def test_format_walltime(seconds, text):
    assert format_walltime(seconds) == text
    assert parse_walltime(text) == seconds


@pytest.mark.parametrize("value, mb", [
    ("16G", 16384),
    ("16GB", 16384),
    ("16GiB", 16384),
    ("16g", 16384),
    ("16gb", 16384),
    ("16 GB", 16384),
    ("16GIB", 16384),
    ("500M", 500),
    ("500MB", 500),
    ("500MiB", 500),
    ("2T", 2 * 1024 * 1024),
    ("2048K", 2),
    ("0.5G", 512),
    (16, 16384),
    ("16", 16384),
    (1.5, 1536),
])
def test_parse_memory_accepts(value, mb):
    assert parse_memory(value) == mb


@pytest.mark.parametrize("value", ["16B", "lots", "16X", "-1G", "G", "", "1e3", None, True, [16], float("nan")])
def test_parse_memory_refuses(value):
    with pytest.raises(ValueError, match="^$"):
        parse_memory(value)


@pytest.mark.parametrize("value, why", [(0, "must be more than zero"), (-2, "must be more than zero"),
                                        ("0G", "must be more than zero"), ("1K", "must be at least 1M")])
def test_parse_memory_refuses_tiny(value, why):
    with pytest.raises(ValueError, match=why):
        parse_memory(value)


@pytest.mark.parametrize("mb, text", [(16384, "16G"), (500, "500M"), (1536, "1536M"), (2 * 1024 * 1024, "2048G")])
def test_format_memory(mb, text):
    assert format_memory(mb) == text
    assert parse_memory(text) == mb


@pytest.mark.parametrize("written, seconds, mb", [
    ("time: 1:30:00\n  mem: 16GB", 5400, 16384),
    ("time: 90\n  mem: 16", 5400, 16384),
    ("time: '01:30:00'\n  mem: 16GiB", 5400, 16384),
    ("time: 0-01:30:00\n  mem: 16384M", 5400, 16384),
])
def test_units_are_normalised_once(tmp_path, capsys, written, seconds, mb):
    path = tmp_path / "job.yaml"
    path.write_text(f"name: j\nresources:\n  {written}\n")
    spec = load_spec(path)
    assert (spec.resources.time_seconds, spec.resources.mem_mb) == (seconds, mb)
    assert main(["check", str(path)]) == 0
    resources = yaml.safe_load(capsys.readouterr().out)["resources"]
    assert (resources["time"], resources["mem"]) == ("01:30:00", "16G")


def test_unquoted_walltime_is_not_base_60():
    # YAML 1.1 (PyYAML's default) reads 1:30:00 as the integer 5400, which as minutes would be
    # 90 hours; the spec loader keeps it a string, so it means 1 h 30 min.
    assert yaml.safe_load("time: 1:30:00") == {"time": 5400}
    assert parse_yaml("time: 1:30:00") == {"time": "1:30:00"}
    assert parse_yaml("a: 1\nb: 0.5\nc: 1e-3\nd: 0x10\ne: -2\nf: 1_000") == {
        "a": 1, "b": 0.5, "c": 0.001, "d": 16, "e": -2, "f": 1000}


# ---------------------------------------------------------------- round trip


RICH_SPEC = """\
extends: site.yaml
name: rich-job
scheduler:
  kind: slurm
  slurm_gpu_flag: gpus-per-node
  extra_directives: ["--constraint=a100", "--exclusive"]
  skip_directives: [--requeue]
  max_node_failures: 1
  continuation: chain
resources:
  nodes: 2
  gpus_per_node: 4
  mem: 1.5
  time: 1-12:00:00
environment:
  env: {OMP_NUM_THREADS: 4, DATA: "${SCRATCH}/data", FLAG: "10:00:00"}
  setup: ["source venv/bin/activate", "echo 'ready: yes' # a comment"]
  python: ~/venv/bin/python
train:
  lr: 1e-3
  device: "cuda:0"
sweep:
  train.lr: [0.001, 0.0003]
  train.epochs: [1, 2]
"""

SITE = """\
scheduler: {kind: pbs, pbs_flavor: torque}
resources: {queue: gpu, account: proj-7, mem: 8G, time: "10:00:00"}
environment: {modules: [gcc/12, cuda/11.1], tmpdir: /scratch/$USER/tmp}
"""


def spec_files() -> list:
    return [pytest.param(p, id=p.stem) for p in JOBS] + [pytest.param("rich", id="rich-spec")]


@pytest.mark.parametrize("source", spec_files())
def test_check_output_round_trips(tmp_path, capsys, source):
    if source == "rich":
        (tmp_path / "site.yaml").write_text(SITE)
        source = tmp_path / "rich.yaml"
        source.write_text(RICH_SPEC)
    assert main(["check", str(source)]) == 0
    first = capsys.readouterr().out
    again = tmp_path / "resolved.yaml"
    again.write_text(first)
    assert main(["check", str(again)]) == 0
    assert capsys.readouterr().out == first
    assert "extends" not in yaml.safe_load(first)
    original = dataclasses.replace(load_spec(source), source="")
    assert dataclasses.replace(load_spec(again), source="") == original


@pytest.mark.parametrize("source", spec_files())
def test_trainer_reads_check_output_as_is(tmp_path, capsys, source):
    train_main = pytest.importorskip("train.__main__")
    if source == "rich":
        (tmp_path / "site.yaml").write_text(SITE)
        source = tmp_path / "rich.yaml"
        source.write_text(RICH_SPEC)
    assert main(["check", str(source)]) == 0
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(capsys.readouterr().out)
    spec = load_spec(source)
    assert train_main.load_config(str(resolved)) == (spec.train, spec.resources.time_seconds)


def test_check_output_is_plain_yaml(tmp_path, capsys):
    # `python -m train --config` must read it as is: plain mappings, lists, strings and numbers,
    # with the units already normalised, whatever YAML reader it uses.
    (tmp_path / "site.yaml").write_text(SITE)
    (tmp_path / "rich.yaml").write_text(RICH_SPEC)
    assert main(["check", str(tmp_path / "rich.yaml")]) == 0
    out = capsys.readouterr().out
    assert "!!" not in out
    data = yaml.safe_load(out)
    assert data["resources"]["time"] == "36:00:00"
    assert data["resources"]["mem"] == "1536M"
    assert data["environment"]["env"]["FLAG"] == "10:00:00"
    assert data["train"]["lr"] == 0.001
    assert data == parse_yaml(out)


# ---------------------------------------------------------------- extends and --set


def test_extends_deep_merges_under_and_set_wins(tmp_path, capsys):
    (tmp_path / "sites").mkdir()
    (tmp_path / "sites" / "site.yaml").write_text(
        "scheduler: {kind: pbs, pbs_flavor: torque, max_requeues: 5}\n"
        "resources: {queue: gpu, account: proj-7, mem: 8G, time: '04:00:00', cpus_per_task: 2}\n"
        "environment: {modules: [gcc/12, cuda/11.1], tmpdir: /scratch/tmp}\n"
        "train: {data: {samples: 2000, vector_features: 8}}\n"
    )
    job_path = tmp_path / "job.yaml"
    job_path.write_text(
        "extends: sites/site.yaml\n"
        "name: merged\n"
        "scheduler: {pbs_flavor: pbspro}\n"
        "resources: {mem: 16G, gpus_per_node: 1}\n"
        "environment: {modules: [cuda/12.1]}\n"
        "train: {epochs: 4, data: {samples: 1000}}\n"
    )
    spec = load_spec(job_path, ["resources.mem=32G", "train.data.samples=500", "resources.queue=debug",
                                "resources.queue=short"])
    # from the site file, where the job says nothing
    assert spec.scheduler.kind == "pbs"
    assert spec.scheduler.max_requeues == 5
    assert spec.resources.account == "proj-7"
    assert spec.resources.time_seconds == 4 * 3600
    assert spec.resources.cpus_per_task == 2
    assert spec.environment.tmpdir == "/scratch/tmp"
    assert spec.train.data.vector_features == 8
    # the job file over the site file, key by key (lists are replaced, not appended)
    assert spec.scheduler.pbs_flavor == "pbspro"
    assert spec.resources.gpus_per_node == 1
    assert spec.environment.modules == ("cuda/12.1",)
    assert spec.train.epochs == 4
    # --set over both; the last --set of a key wins
    assert spec.resources.mem_mb == 32 * 1024
    assert spec.train.data.samples == 500
    assert spec.resources.queue == "short"

    assert main(["check", str(job_path), "--set", "resources.nodes=3", "--set", "train.lr=0.01"]) == 0
    data = yaml.safe_load(capsys.readouterr().out)
    assert (data["resources"]["nodes"], data["train"]["lr"], data["resources"]["queue"]) == (3, 0.01, "gpu")


def test_set_parses_values_as_yaml(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text("name: j\n")
    spec = load_spec(path, [
        "resources.time=1:30:00",
        "environment.modules=[gcc/12, cuda/11.1]",
        "environment.env={A: 1, B: x}",
        "scheduler.extra_directives=--mail-user=me@example.org",
        "resources.account=",
        "environment.tmpdir=null",
    ])
    assert spec.resources.time_seconds == 5400
    assert spec.environment.modules == ("gcc/12", "cuda/11.1")
    assert spec.environment.env == (("A", "1"), ("B", "x"))
    assert spec.scheduler.extra_directives == ("--mail-user=me@example.org",)
    assert spec.resources.account is None
    assert spec.environment.tmpdir is None


def test_spec_values_that_look_odd_but_are_fine(tmp_path):
    path = tmp_path / "job.yaml"
    path.write_text(
        "name: a.b_c-1\n"
        "resources: {queue: gpu@server, account: proj_1.x}\n"
        "environment:\n"
        "  modules: [cuda/11.1, gcc/12.2.0+cxx, intel-oneapi/2023]\n"
        "  tmpdir: ${SCRATCH}/tmp dir\n"
        "  setup: ['export X=$(nproc) && echo \"$X\" | tee log; echo\tdone']\n"
        "  python: ~/venv/bin/python\n"
    )
    spec = load_spec(path)
    assert spec.environment.tmpdir == "${SCRATCH}/tmp dir"
    assert spec.environment.setup == ('export X=$(nproc) && echo "$X" | tee log; echo\tdone',)


@pytest.mark.skipif(os.name != "posix", reason="POSIX file modes")
def test_render_output_file_mode_follows_umask(tmp_path, capsys):
    spec = tmp_path / "job.yaml"
    spec.write_text("name: j\n")
    old = os.umask(0o022)
    try:
        assert main(["render", str(spec), "-o", str(tmp_path / "job.sh")]) == 0
    finally:
        os.umask(old)
    assert capsys.readouterr().err == f"wrote {tmp_path / 'job.sh'}\n"
    assert (tmp_path / "job.sh").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
