"""Hostile or absurd specs: each ends in one line ``FILE: dotted.key: problem (allowed)``, exit 2.

Fast, bounded and side-effect free: every case runs ``cluster check`` in-process and must
answer within a second, in one line under 300 bytes, without writing anything. Covered
here: values that would make the rendered script evaluate text (``$[``, a lone ``$``, ...),
YAML alias bombs, duplicate keys, deep nesting, huge integers, files that are not regular
files, long ``extends`` chains, and values the schedulers or the trainer would refuse later.
The allowed shell values are rendered and the script is run by bash, to show that it
expands them and evaluates nothing.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from cluster.cli import main
from cluster.errors import SpecError
from cluster.spec import MAX_INT, JobSpec, expand_path, load_spec

BASH = shutil.which("bash")
NO_COMMANDS = "(allowed: a path, $VAR or ${VAR}; no commands or quotes)"
NOT_A_REF = "which is not $NAME or ${NAME} " + NO_COMMANDS
CONTROL = "contains a newline or control character (allowed: a path, $VAR or ${VAR})"
TIME_ALLOWED = "allowed: HH:MM:SS, D-HH:MM:SS, or minutes"
MEM_ALLOWED = "allowed: 16G, 16GB, 16GiB, 500M, or a plain number of GB"


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def check_refuses(tmp_path: Path, monkeypatch, capsys, spec: str, message: str, *args: str) -> None:
    """``cluster check spec`` prints exactly ``message`` (one line, < 300 bytes), exit 2, without hanging."""
    monkeypatch.chdir(tmp_path)
    before = tree(tmp_path)
    start = time.monotonic()
    assert main(["check", spec, *args]) == 2
    elapsed = time.monotonic() - start
    out, err = capsys.readouterr()
    assert (out, err) == ("", message + "\n")
    assert len(err.encode()) < 300, f"{len(err.encode())} bytes"
    # A bound against a hang (a refusal never waits on a file or a process), not a speed test:
    # four test workers on two busy cores made a 1-second bound fail.
    assert elapsed < 60, f"took {elapsed:.2f} s"
    assert tree(tmp_path) == before
    assert not (tmp_path / "pwned").exists()


def yaml_str(value: str) -> str:
    """A YAML double-quoted scalar holding exactly ``value`` (JSON strings are YAML)."""
    return json.dumps(value)


# ---------------------------------------------------------------- 1. nothing in a value is evaluated

# (value, problem): each refused in environment.env values, output.runs_dir, environment.python
# and environment.tmpdir, all of which the script writes inside double quotes.
SHELL_PAYLOADS = [
    pytest.param("$", f"contains '$', {NOT_A_REF}", id="lone-dollar"),
    pytest.param("a$", f"contains '$', {NOT_A_REF}", id="dollar-at-end"),
    pytest.param("$[X]", f"contains '$[', {NOT_A_REF}", id="arithmetic-brackets"),
    pytest.param("a[$[1+1]]", f"contains '$[', {NOT_A_REF}", id="arithmetic-inside"),
    pytest.param("$((1+1))", f"contains '$(' {NO_COMMANDS}", id="arithmetic-parens"),
    pytest.param("$(touch pwned)", f"contains '$(' {NO_COMMANDS}", id="command-substitution"),
    pytest.param("x${HOME}$(id)", f"contains '$(' {NO_COMMANDS}", id="command-after-ref"),
    pytest.param("${X:-$(id)}", f"contains '${{X:-$(id)}}', {NOT_A_REF}", id="default-expansion"),
    pytest.param("${X:=a}", f"contains '${{X:=a}}', {NOT_A_REF}", id="assign-expansion"),
    pytest.param("${#X}", f"contains '${{#X}}', {NOT_A_REF}", id="length-expansion"),
    pytest.param("${X[$(id)]}", f"contains '${{X[$(id)]}}', {NOT_A_REF}", id="subscript-expansion"),
    pytest.param("${!X}", f"contains '${{!X}}', {NOT_A_REF}", id="indirect-expansion"),
    pytest.param("${X", f"contains '${{X', {NOT_A_REF}", id="unclosed-brace"),
    pytest.param("$$", f"contains '$$', {NOT_A_REF}", id="pid"),
    pytest.param("$1", f"contains '$1', {NOT_A_REF}", id="positional"),
    pytest.param("$@", f"contains '$@', {NOT_A_REF}", id="all-args"),
    pytest.param("a $ b", f"contains '$ ', {NOT_A_REF}", id="dollar-space"),
    pytest.param("$'\\x41'", f"contains \"$'\", {NOT_A_REF}", id="ansi-c-quote"),
    pytest.param('$"x"', f"contains '$\"', {NOT_A_REF}", id="locale-quote"),
    pytest.param("$HOME$", f"contains '$', {NOT_A_REF}", id="ref-then-dollar"),
    pytest.param("`touch pwned`", f"contains '`' {NO_COMMANDS}", id="backtick"),
    pytest.param('a"b', f"contains '\"' {NO_COMMANDS}", id="double-quote"),
    pytest.param("a'b", f"contains \"'\" {NO_COMMANDS}", id="single-quote"),
    pytest.param("a\\b", f"contains '\\\\' {NO_COMMANDS}", id="backslash"),
    pytest.param("a;b", f"contains ';' {NO_COMMANDS}", id="semicolon"),
    pytest.param("a\nb", CONTROL, id="newline"),
    pytest.param("a\rb", CONTROL, id="carriage-return"),
    pytest.param("a\x01b", CONTROL, id="control"),
    pytest.param("a\tb", CONTROL, id="tab"),
]
SHELL_KEYS = [
    pytest.param("environment.env.X", id="env"),
    pytest.param("output.runs_dir", id="runs_dir"),
    pytest.param("environment.python", id="python"),
    pytest.param("environment.tmpdir", id="tmpdir"),
]


def spec_with(key: str, value: str) -> str:
    section, _, rest = key.partition(".")
    if key.startswith("environment.env."):
        body = f"environment:\n  env:\n    {key.rsplit('.', 1)[1]}: {yaml_str(value)}\n"
    else:
        body = f"{section}:\n  {rest}: {yaml_str(value)}\n"
    return "name: j\n" + body


@pytest.mark.parametrize("key", SHELL_KEYS)
@pytest.mark.parametrize("value, problem", SHELL_PAYLOADS)
def test_shell_payloads_are_refused(tmp_path, monkeypatch, capsys, key, value, problem):
    (tmp_path / "job.yaml").write_text(spec_with(key, value), encoding="utf-8")
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", f"job.yaml: {key}: {problem}")


@pytest.mark.parametrize("key", SHELL_KEYS)
def test_shell_payload_through_set_is_refused(tmp_path, monkeypatch, capsys, key):
    (tmp_path / "job.yaml").write_text("name: j\n")
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml",
                  f"job.yaml (--set {key}=$[X]): {key}: contains '$[', {NOT_A_REF}", "--set", f"{key}=$[X]")


def test_the_composed_arithmetic_attack_is_refused(tmp_path, monkeypatch, capsys):
    # Accepted before: D holds a lone '$', X a subscript that becomes $(touch pwned) once
    # D expands, and Y's $[X] evaluates X's value, subscript included.
    (tmp_path / "job.yaml").write_text(
        'name: j\nenvironment: {env: {D: "$", X: "a[${D}(touch pwned)]", Y: "$[X]"}}\n')
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml",
                  f"job.yaml: environment.env.D: contains '$', {NOT_A_REF}")


# Values that stay allowed, and what bash makes of them (HOME and SCRATCH are set below).
ALLOWED_ENV = {
    "PLAIN": ("plain", "plain"),
    "REF": ("$HOME/x", "{home}/x"),
    "BRACED": ("${SCRATCH}y", "{scratch}y"),
    "BRACKETS": ("a[b]c", "a[b]c"),
    "PARENS": ("x(y)", "x(y)"),
    "ARRAYLIKE": ("$PLAIN[0]", "plain[0]"),
    "EARLIER": ("$PLAIN-${REF}", "plain-{home}/x"),
    "TILDE": ("~/z", "{home}/z"),
    "SPACES": ("a b  c", "a b  c"),
    "BANG": ("!x", "!x"),
    "GLOB": ("*?", "*?"),
    "PERCENT": ("100%", "100%"),
    "COLONS": ("a=b:c,d", "a=b:c,d"),
    "DASH": ("-O2", "-O2"),
    "UNICODE": ("caf\u00e9", "caf\u00e9"),
    "TEN": (10, "10"),
    "PATH": ("$HOME/bin:$PATH", "{home}/bin:{path}"),
}


@pytest.mark.skipif(BASH is None, reason="needs bash")
def test_allowed_values_expand_and_nothing_is_evaluated(tmp_path, monkeypatch, capsys):
    home, scratch, work = tmp_path / "home", tmp_path / "scratch", tmp_path / "work"
    for d in (home, scratch, work):
        d.mkdir()
    stub = tmp_path / "stub-python"  # stands in for the compute node's python: records its environment
    stub.write_text('#!/bin/sh\nenv > "$CAPTURE"\necho "$@" > "$CAPTURE.args"\n')
    stub.chmod(0o755)
    env_lines = "".join(f"    {name}: {yaml_str(v) if isinstance(v, str) else v}\n"
                        for name, (v, _) in ALLOWED_ENV.items())
    spec = work / "job.yaml"
    spec.write_text(
        "name: j\n"
        "resources: {time: '00:10:00'}\n"
        "environment:\n"
        f"  python: {yaml_str(str(stub))}\n"
        "  tmpdir: ${SCRATCH}/tmp [1]\n"
        "  env:\n" + env_lines +
        "output: {runs_dir: '$HOME/runs (a)'}\n"
    )
    monkeypatch.chdir(work)
    assert main(["render", str(spec), "--scheduler", "slurm", "-o", str(tmp_path / "job.sh")]) == 0
    capsys.readouterr()
    path = os.environ.get("PATH", "/usr/bin:/bin")
    env = {"HOME": str(home), "SCRATCH": str(scratch), "PATH": path, "CAPTURE": str(tmp_path / "env.txt")}
    proc = subprocess.run([BASH, str(tmp_path / "job.sh")], cwd=work, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    captured = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
    for name, (_, expected) in ALLOWED_ENV.items():
        want = expected.format(home=home, scratch=scratch, path=path)
        assert captured.get(name) == want, name
    assert captured["TMPDIR"] == f"{scratch}/tmp [1]"
    assert (scratch / "tmp [1]").is_dir()
    runs = list((home / "runs (a)").iterdir())
    assert len(runs) == 1 and (runs[0] / "spec.yaml").is_file()
    # nothing anywhere was created by an evaluated value
    assert not list(tmp_path.rglob("pwned"))
    assert sorted(p.name for p in work.iterdir()) == ["job.yaml"]


def test_a_value_built_from_earlier_ones_is_not_evaluated_by_bash(tmp_path):
    # The reason for refusing a lone '$': the same composition, written straight into bash,
    # runs the command. (The spec loader can no longer produce these lines.)
    if BASH is None:
        pytest.skip("needs bash")
    script = tmp_path / "s.sh"
    script.write_text('export D="$"\nexport X="a[${D}(touch pwned)]"\nexport Y="$[X]"\n')
    subprocess.run([BASH, str(script)], cwd=tmp_path, capture_output=True, timeout=30)
    assert (tmp_path / "pwned").exists()


# ---------------------------------------------------------------- 2. YAML alias bombs


def laughs(levels: int, width: int) -> str:
    lines = ["name: j", "a0: &a0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("text, line", [
    pytest.param(laughs(9, 9), 3, id="billion-laughs"),
    pytest.param("name: j\ntrain: {seed: &s 1}\nsweep: {train.seed: [*s]}\n", 3, id="one-alias"),
    pytest.param("name: j\nx: &x [*x]\n", 2, id="recursive"),
    pytest.param("name: j\nbase: &b {epochs: 2}\ntrain: {<<: *b}\n", 3, id="merge-key"),
])
def test_aliases_are_refused(tmp_path, monkeypatch, capsys, text, line):
    assert len(text) < 700
    (tmp_path / "job.yaml").write_text(text)
    anchor = text.split("*", 1)[1].split("]")[0].split("}")[0].split(",")[0]
    tracemalloc.start()
    try:
        check_refuses(tmp_path, monkeypatch, capsys, "job.yaml",
                      f"job.yaml: line {line}: YAML error: alias *{anchor} is not allowed in a spec "
                      "(write the value out; share settings between specs with extends)")
        assert tracemalloc.get_traced_memory()[1] < 32 * 1024 * 1024
    finally:
        tracemalloc.stop()


def test_anchors_without_aliases_are_fine(tmp_path):
    (tmp_path / "job.yaml").write_text("name: j\ntrain: &t {epochs: 2}\n")
    assert load_spec(tmp_path / "job.yaml").train.epochs == 2


# ---------------------------------------------------------------- 3. duplicate keys

DUPLICATES = [
    pytest.param("name: j\ntrain: {epochs: 2}\nresources: {nodes: 1}\ntrain: {epochs: 3}\n",
                 "job.yaml: train: duplicate key on line 4 (first on line 2; allowed: each key once per mapping)",
                 id="top-level"),
    pytest.param("name: j\nname: k\n",
                 "job.yaml: name: duplicate key on line 2 (first on line 1; allowed: each key once per mapping)",
                 id="name"),
    pytest.param("name: j\ntrain:\n  data:\n    samples: 100\n    samples: 200\n",
                 "job.yaml: train.data.samples: duplicate key on line 5 (first on line 4; "
                 "allowed: each key once per mapping)", id="nested"),
    pytest.param("name: j\nenvironment: {env: {A: 1, 'A': 2}}\n",
                 "job.yaml: environment.env.A: duplicate key on line 2 (first on line 2; "
                 "allowed: each key once per mapping)", id="quoted-same-line"),
    pytest.param("name: j\nsweep:\n  train.lr: [0.1]\n  train.lr: [0.2]\n",
                 "job.yaml: sweep.train.lr: duplicate key on line 4 (first on line 3; "
                 "allowed: each key once per mapping)", id="sweep"),
    pytest.param("name: j\nx: [{a: 1, a: 2}]\n",
                 "job.yaml: x[0].a: duplicate key on line 2 (first on line 2; allowed: each key once per mapping)",
                 id="in-a-list"),
]


@pytest.mark.parametrize("text, message", DUPLICATES)
def test_duplicate_keys_are_refused(tmp_path, monkeypatch, capsys, text, message):
    (tmp_path / "job.yaml").write_text(text)
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", message)


def test_duplicate_key_in_a_site_file(tmp_path, monkeypatch, capsys):
    (tmp_path / "site.yaml").write_text("resources:\n  queue: a\n  queue: b\n")
    (tmp_path / "job.yaml").write_text("extends: site.yaml\nname: j\n")
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml",
                  "site.yaml: resources.queue: duplicate key on line 3 (first on line 2; "
                  "allowed: each key once per mapping)")


def test_duplicate_key_in_a_set_value(tmp_path, monkeypatch, capsys):
    (tmp_path / "job.yaml").write_text("name: j\n")
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml",
                  "job.yaml (--set environment.env={A: 1, A: 2}): environment.env.A: duplicate key on line 1 "
                  "(first on line 1; allowed: each key once per mapping)",
                  "--set", "environment.env={A: 1, A: 2}")


# ---------------------------------------------------------------- 4. sizes, depths and files

NESTING = "job.yaml: line 2: YAML error: nested deeper than 20 levels (allowed: at most 20)"


@pytest.mark.parametrize("text, message", [
    pytest.param("name: j\ntrain: " + "[" * 5000 + "]" * 5000 + "\n", NESTING, id="deep-flow-list"),
    pytest.param("name: j\ntrain: " + "{a: " * 3000 + "1" + "}" * 3000 + "\n", NESTING, id="deep-flow-map"),
    pytest.param("name: j\n" + "".join(" " * i + f"k{i}:\n" for i in range(30)) + " " * 30 + "v: 1\n",
                 "job.yaml: line 22: YAML error: nested deeper than 20 levels (allowed: at most 20)", id="deep-block"),
    pytest.param("name: j\ntrain: {seed: " + "9" * 5000 + "}\n",
                 f"job.yaml: line 2: YAML error: integer of 5000 digits (allowed: at most {MAX_INT})",
                 id="5000-digit-int"),
    pytest.param("name: j\ntrain: {seed: 0x" + "f" * 5000 + "}\n",
                 f"job.yaml: line 2: YAML error: integer of 5000 digits (allowed: at most {MAX_INT})",
                 id="5000-digit-hex"),
    pytest.param("name: j\nresources: {mem: 1e308}\n",
                 f"job.yaml: resources.mem: must be at most 65536G (got 1e+308; {MEM_ALLOWED})", id="mem-1e308"),
    pytest.param("name: j\nresources: {mem: 1e999}\n",
                 f"job.yaml: resources.mem: must be at most 65536G (got inf; {MEM_ALLOWED})", id="mem-inf"),
    pytest.param("name: j\nresources: {mem: 100000T}\n",
                 f"job.yaml: resources.mem: must be at most 65536G (got '100000T'; {MEM_ALLOWED})", id="mem-huge"),
    pytest.param("name: j\nresources: {mem: " + "9" * 30 + "}\n",
                 f"job.yaml: resources.mem: integer too large ({'9' * 30}; allowed: at most {MAX_INT})",
                 id="mem-long-int"),
])
def test_sizes_and_depths(tmp_path, monkeypatch, capsys, text, message):
    (tmp_path / "job.yaml").write_text(text)
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", message)


@pytest.mark.parametrize("text, message", [
    pytest.param("name: j\nx: [" + ", ".join(["1"] * 20000) + "]\n",
                 "job.yaml: line 2: YAML error: more than 10000 values (allowed: a spec of at most 10000 keys, "
                 "values and items)", id="many-items"),
    pytest.param("name: j\n" + "".join(f"k{i}: 1\n" for i in range(6000)),
                 "job.yaml: line 5000: YAML error: more than 10000 values (allowed: a spec of at most 10000 keys, "
                 "values and items)", id="many-keys"),
    pytest.param("name: j\n# " + "x" * 1000000 + "\nbogus: 1\n",
                 "job.yaml: bogus: unknown key (valid: name, scheduler, resources, environment, output, train, command, vars, sweep)",
                 id="one-mebibyte-comment"),
    pytest.param("name: j\nx: '" + "x" * 1000000 + "\n",
                 "job.yaml: line 3: YAML error: found unexpected end of stream", id="one-mebibyte-unclosed-quote"),
    pytest.param("name: j\n# " + "x" * 100000 + "\nresources: {nodes: 1\n",
                 "job.yaml: line 4: YAML error: did not find expected ',' or '}'", id="large-file-syntax-error"),
])
def test_large_texts_are_quick(tmp_path, monkeypatch, capsys, text, message):
    # Under a second although PyYAML's pure-Python parser alone takes about that long for 1 MiB:
    # libyaml parses, and the number of values is capped. A large text that is not YAML gets
    # libyaml's message (small ones PyYAML's, as in test_spec_errors).
    (tmp_path / "job.yaml").write_text(text)
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", message)


def test_file_over_the_size_cap(tmp_path, monkeypatch, capsys):
    (tmp_path / "job.yaml").write_text("name: j\n# " + "x" * (1024 * 1024) + "\n")
    size = (tmp_path / "job.yaml").stat().st_size
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml",
                  f"job.yaml: is {size} bytes (allowed: a spec file of at most 1048576 bytes)")


def test_long_extends_chain(tmp_path, monkeypatch, capsys):
    for i in range(1100):
        (tmp_path / f"e{i}.yaml").write_text(f"extends: e{i + 1}.yaml\n")
    (tmp_path / "e1100.yaml").write_text("train: {epochs: 2}\n")
    (tmp_path / "job.yaml").write_text("extends: e0.yaml\nname: j\n")
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml",
                  "e19.yaml: extends: chain of more than 20 files (allowed: at most 20 levels of extends)")


def test_extends_chain_of_twenty_is_fine(tmp_path):
    for i in range(19):
        (tmp_path / f"e{i}.yaml").write_text(f"extends: e{i + 1}.yaml\n")
    (tmp_path / "e19.yaml").write_text("train: {epochs: 2}\n")
    (tmp_path / "job.yaml").write_text("extends: e0.yaml\nname: j\n")
    assert load_spec(tmp_path / "job.yaml").train.epochs == 2


def special_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo.yaml")
    os.symlink("loop-b.yaml", tmp_path / "loop-a.yaml")
    os.symlink("loop-a.yaml", tmp_path / "loop-b.yaml")
    os.symlink("/dev/zero", tmp_path / "zero.yaml")


SPECIAL = [
    pytest.param("/dev/zero", "/dev/zero: is a device, not a regular file (expected a YAML job spec file)",
                 id="dev-zero"),
    pytest.param("zero.yaml", "zero.yaml: is a device, not a regular file (expected a YAML job spec file)",
                 id="link-to-dev-zero"),
    pytest.param("fifo.yaml", "fifo.yaml: is a FIFO, not a regular file (expected a YAML job spec file)", id="fifo"),
    pytest.param("loop-a.yaml", "loop-a.yaml: symlink loop (too many levels of symbolic links; expected a YAML "
                 "job spec file)", id="symlink-loop"),
]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="POSIX")
@pytest.mark.parametrize("as_extends", [False, True], ids=["spec", "extends"])
@pytest.mark.parametrize("target, message", SPECIAL)
def test_files_that_are_not_regular(tmp_path, target, message, as_extends):
    # In a real process with a timeout: reading a FIFO used to hang forever.
    special_files(tmp_path)
    spec = target
    if as_extends:
        (tmp_path / "job.yaml").write_text(f"extends: {target}\nname: j\n")
        spec = "job.yaml"
    before = tree(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "check", spec], cwd=tmp_path,
                          capture_output=True, text=True, timeout=20)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", message + "\n")
    assert tree(tmp_path) == before
    assert stat.S_ISFIFO(os.lstat(tmp_path / "fifo.yaml").st_mode)


# ---------------------------------------------------------------- 5. accepted before, failing later

LATER = [
    pytest.param("resources: {time: '" + "9" * 400 + "'}",
                 "resources.time: must be at most 365 days (got '" + "9" * 66 + f"...; {TIME_ALLOWED})",
                 id="time-400-digits"),
    pytest.param("resources: {time: " + "9" * 30 + "}",
                 "resources.time: integer too large (" + "9" * 30 + f"; allowed: at most {MAX_INT})",
                 id="time-huge-minutes"),
    pytest.param("resources: {time: 366-00:00:00}",
                 f"resources.time: must be at most 365 days (got '366-00:00:00'; {TIME_ALLOWED})", id="time-366-days"),
    pytest.param("train: {seed: 18446744073709551616}",
                 f"train.seed: integer too large (18446744073709551616; allowed: at most {MAX_INT})", id="seed-2**64"),
    pytest.param(f"train: {{seed: {2 ** 63}}}",
                 f"train.seed: integer too large ({2 ** 63}; allowed: at most {MAX_INT})", id="seed-2**63"),
    pytest.param(f"train: {{epochs: {10 ** 30}}}",
                 f"train.epochs: integer too large ({10 ** 30}; allowed: at most {MAX_INT})", id="epochs-huge"),
    pytest.param(f"train: {{seed: -{10 ** 30}}}",
                 f"train.seed: integer too large (-{10 ** 30}; allowed: at most {MAX_INT})", id="seed-very-negative"),
    pytest.param("resources: {cpus_per_task: 1025}",
                 "resources.cpus_per_task: must be at most 1024 (got 1025; allowed: 1 to 1024)", id="cpus"),
    pytest.param("resources: {tasks_per_node: 5000}",
                 "resources.tasks_per_node: must be at most 1024 (got 5000; allowed: 1 to 1024)", id="tasks"),
    pytest.param("resources: {gpus_per_node: 65}",
                 "resources.gpus_per_node: must be at most 64 (got 65; allowed: 0 to 64)", id="gpus"),
    pytest.param("resources: {nodes: 100001}",
                 "resources.nodes: must be at most 100000 (got 100001; allowed: 1 to 100000)", id="nodes"),
    pytest.param("scheduler: {signal_seconds: 70000}",
                 "scheduler.signal_seconds: must be at most 65535 (got 70000; allowed: 0 to 65535; "
                 "Slurm's --signal takes at most 65535 seconds)", id="signal-seconds"),
    pytest.param("scheduler: {max_requeues: 1001}",
                 "scheduler.max_requeues: must be at most 1000 (got 1001; allowed: 0 to 1000)", id="requeues"),
    pytest.param(f"resources: {{queue: {'q' * 65}}}", "resources.queue: is 65 characters long (allowed: at most 64)",
                 id="queue-length"),
    pytest.param(f"resources: {{account: {'a' * 100}}}",
                 "resources.account: is 100 characters long (allowed: at most 64)", id="account-length"),
    pytest.param("output: {runs_dir: -rf}",
                 "output.runs_dir: starts with '-' (allowed: a path that does not start with '-'; write ./-rf)",
                 id="runs-dir-dash"),
    pytest.param("environment: {tmpdir: -p}",
                 "environment.tmpdir: starts with '-' (allowed: a path that does not start with '-'; write ./-p)",
                 id="tmpdir-dash"),
    pytest.param("environment: {python: -c}",
                 "environment.python: starts with '-' (allowed: a path that does not start with '-'; write ./-c)",
                 id="python-dash"),
    pytest.param("output: {runs_dir: ~other/runs}",
                 "output.runs_dir: starts with '~other' (allowed: ~ or ~/ at the start, $VAR, ${VAR}; "
                 "~user is not expanded)", id="runs-dir-tilde-user"),
    pytest.param("sweep: {train.seed: [" + ", ".join(map(str, range(40))) + "], train.epochs: ["
                 + ", ".join(map(str, range(1, 41))) + "]}",
                 "sweep: gives more than 1000 combinations (allowed: at most 1000 tasks in one array job)",
                 id="sweep-too-big"),
]


@pytest.mark.parametrize("body, message", LATER)
def test_values_that_would_fail_later(tmp_path, monkeypatch, capsys, body, message):
    (tmp_path / "job.yaml").write_text(f"name: j\n{body}\n")
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", f"job.yaml: {message}")


def test_limits_themselves_are_allowed(tmp_path):
    (tmp_path / "job.yaml").write_text(
        f"name: j\ntrain: {{seed: {MAX_INT}}}\n"
        f"resources: {{cpus_per_task: 1024, time: 365-00:00:00, mem: 64T, queue: {'q' * 64}}}\n"
        "scheduler: {signal_seconds: 65535}\n"
        "environment: {env: {OPTS: -O2, PATH: '$HOME/bin:$PATH', LD_LIBRARY_PATH: /opt/lib}}\n")
    spec = load_spec(tmp_path / "job.yaml")
    assert spec.train.seed == MAX_INT
    assert spec.resources.time_seconds == 365 * 86400
    assert dict(spec.environment.env)["OPTS"] == "-O2"


RESERVED_PREFIX = "is reserved (names starting with {p} belong to the toolkit, the scheduler or bash; " \
                  "allowed: other NAMEs, e.g. PATH or OMP_NUM_THREADS)"
RESERVED_NAME = "is reserved (bash, the job script or the toolkit sets it; allowed: other NAMEs, e.g. PATH or " \
                "OMP_NUM_THREADS)"


@pytest.mark.parametrize("name, problem", [
    *[pytest.param(n, RESERVED_PREFIX.format(p=p), id=n) for n, p in [
        ("CLUSTER_RUN_DIR", "CLUSTER_"), ("CLUSTER_DEADLINE", "CLUSTER_"), ("SLURM_JOB_ID", "SLURM_"),
        ("SLURM_RESTART_COUNT", "SLURM_"), ("PBS_JOBID", "PBS_"), ("SUBMITIT_FOLDER", "SUBMITIT_"),
        ("BASH_ENV", "BASH_"), ("BASH_XTRACEFD", "BASH_")]],
    *[pytest.param(n, RESERVED_NAME, id=n) for n in
      ("UID", "EUID", "PPID", "BASHPID", "SHELLOPTS", "BASHOPTS", "IFS", "ENV", "PS4", "RUN_DIR", "JOB_ID",
       "RANK", "WORLD_SIZE", "MASTER_ADDR")],
    pytest.param("TMPDIR", "is reserved (allowed: set TMPDIR with environment.tmpdir)", id="TMPDIR"),
])
def test_reserved_env_names(tmp_path, monkeypatch, capsys, name, problem):
    (tmp_path / "job.yaml").write_text(f"name: j\nenvironment: {{env: {{{name}: x}}}}\n")
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", f"job.yaml: environment.env.{name}: {problem}")


@pytest.mark.parametrize("name", ["PATH", "LD_LIBRARY_PATH", "HOME", "PYTHONPATH", "OMP_NUM_THREADS",
                                  "CUDA_VISIBLE_DEVICES", "NCCL_DEBUG", "cluster_lower", "SLURMISH"])
def test_ordinary_env_names_are_allowed(tmp_path, name):
    (tmp_path / "job.yaml").write_text(f"name: j\nenvironment: {{env: {{{name}: x}}}}\n")
    assert load_spec(tmp_path / "job.yaml").environment.env == ((name, "x"),)


# ---------------------------------------------------------------- echoes stay short

ECHOES = [
    pytest.param(f"{'k' * 1000}: 1",
                 f"{'k' * 77}...: unknown key (valid: name, scheduler, resources, environment, output, train, command, vars, sweep)",
                 id="long-unknown-key"),
    pytest.param(f"train: {{device: {'x' * 100000}}}",
                 f"train.device: must be auto, cpu, cuda or cuda:N (got '{'x' * 66}...)", id="long-device"),
    pytest.param("train: {data: {image_shape: [" + ", ".join(["1"] * 5000) + "]}}",
                 "train.data.image_shape: must be [height, width], each at least 6 (got [" + "1, " * 22 + "...): "
                 "two 3x3 convolutions and a 2x2 pooling must leave at least one feature", id="long-list"),
    pytest.param(f"scheduler: {{kind: {'s' * 100000}}}",
                 f"scheduler.kind: unknown value '{'s' * 66}... (allowed: auto, slurm, pbs, local)", id="long-choice"),
    pytest.param(f"resources: {{nodes: '{'n' * 100000}'}}",
                 f"resources.nodes: must be a positive integer (got '{'n' * 66}...)", id="long-count"),
    pytest.param(f"resources: {{mem: '{'9' * 100000}G'}}",
                 f"resources.mem: cannot parse '{'9' * 66}... ({MEM_ALLOWED})", id="long-mem"),
    pytest.param(f"environment: {{env: {{X: '{'x' * 5000}'}}}}",
                 "environment.env.X: is 5000 characters long (allowed: at most 4096)", id="long-env-value"),
]


@pytest.mark.parametrize("body, message", ECHOES)
def test_echoed_values_are_cut(tmp_path, monkeypatch, capsys, body, message):
    (tmp_path / "job.yaml").write_text(f"name: j\n{body}\n")
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", f"job.yaml: {message}")


@pytest.mark.parametrize("case", ["billion-laughs", "fifo", "dup", "deep", "digits"])
def test_no_traceback_in_a_real_process(tmp_path, case):
    texts = {"billion-laughs": laughs(9, 9), "dup": "name: j\nname: k\n",
             "deep": "name: j\ntrain: " + "[" * 5000 + "]" * 5000 + "\n",
             "digits": "name: j\ntrain: {seed: " + "9" * 5000 + "}\n"}
    if case == "fifo":
        os.mkfifo(tmp_path / "job.yaml")
    else:
        (tmp_path / "job.yaml").write_text(texts[case])
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "check", "job.yaml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1 and len(proc.stderr.encode()) < 300
    assert proc.stdout == ""


# ---------------------------------------------------------------- runs_dir on the login node


def spec_at(runs_dir: str) -> JobSpec:
    from cluster.spec import spec_from_dict

    return spec_from_dict({"name": "j", "output": {"runs_dir": runs_dir}})


@pytest.mark.parametrize("runs_dir, expected", [
    ("runs", "runs"),
    ("$HOME/x", "/home/u/x"),
    ("${HOME}/x", "/home/u/x"),
    ("~", "/home/u"),
    ("~/runs", "/home/u/runs"),
    ("$SCRATCH/$USER/runs dir", "/scratch/u/runs dir"),
    ("a~/b", "a~/b"),
    ("/abs/$USER-x", "/abs/u-x"),
])
def test_runs_dir_path_expands_like_the_script(runs_dir, expected):
    environ = {"HOME": "/home/u", "SCRATCH": "/scratch", "USER": "u"}
    assert spec_at(runs_dir).runs_dir_path(environ) == Path(expected)


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("value", ["$HOME/x", "~/r", "${SCRATCH}y", "$PLAIN[0]", "a b", "x(y)*", "~", "a~/b"])
def test_expand_path_agrees_with_bash(value):
    environ = {"HOME": "/home/u", "SCRATCH": "/s", "PLAIN": "p", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    word = "$HOME" + value[1:] if value == "~" or value.startswith("~/") else value  # what the script writes
    out = subprocess.run([BASH, "-c", f'printf %s "{word}"'], env=environ, capture_output=True, text=True,
                         timeout=30).stdout
    assert expand_path(value, environ) == out


def test_runs_dir_with_an_unset_variable_is_one_line():
    with pytest.raises(SpecError) as info:
        spec_at("$NOPE_NOT_SET/runs").runs_dir_path({"HOME": "/h"})
    assert str(info.value) == ("<spec>: output.runs_dir: uses $NOPE_NOT_SET, which is not set here (allowed: "
                               "variables set in the environment of cluster; set it, or write the path out)")


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("value", ["$NOPE/x", "a${NOPE}b", "~/$NOPE", "$HOME$NOPE"])
def test_expand_path_not_strict_is_bash_for_unset_variables(value):
    environ = {"HOME": "/home/u", "PATH": os.environ.get("PATH", "/usr/bin:/bin")}
    word = "$HOME" + value[1:] if value.startswith("~/") else value
    out = subprocess.run([BASH, "-c", f'printf %s "{word}"'], env=environ, capture_output=True, text=True,
                         timeout=30).stdout
    assert expand_path(value, environ, strict=False) == out


def test_tmpdir_path():
    spec = spec_at("runs")
    assert spec.tmpdir_path({"HOME": "/h"}) == Path("/h/tmp")


# --- limits applied to what runs: the argv once placeholders are filled, the whole sweep grid,
# the shipped tasks' options --------------------------------------------------------------

def _command_spec(tmp_path: Path, command: list[str], variables: dict) -> None:
    (tmp_path / "job.yaml").write_text(json.dumps({"name": "j", "command": command, "vars": variables}))


def test_an_argument_over_the_system_limit_once_filled_is_refused(tmp_path, monkeypatch, capsys):
    from cluster.spec import MAX_ARG_BYTES

    _command_spec(tmp_path, ["python3", "{a}{a}"], {"a": "x" * 100_000})  # each item alone is allowed
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml",
                  f"job.yaml: command[1]: is 200000 bytes once its placeholders are filled (allowed: at most "
                  f"{MAX_ARG_BYTES}, the system's limit for one argument)")


def test_all_arguments_over_the_system_limit_once_filled_are_refused(tmp_path, monkeypatch, capsys):
    from cluster.spec import argv_limit

    count = argv_limit() // 100_000 + 2  # each 100,000 bytes, under the one-argument limit
    _command_spec(tmp_path, ["python3", *["{a}"] * count], {"a": "x" * 99_990})
    monkeypatch.chdir(tmp_path)
    assert main(["check", "job.yaml"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith(f"job.yaml: command: its {count + 1} arguments take ") and err.count("\n") == 1
    assert "(allowed: at most " in err and "ARG_MAX less room for the environment)" in err


def test_an_argv_near_the_limits_runs(tmp_path):
    from cluster.backends import render_script
    from cluster.spec import MAX_ARG_BYTES

    out = tmp_path / "sizes"
    code = "import sys; open(sys.argv[1], 'w').write(' '.join(str(len(a)) for a in sys.argv[2:]))"
    (tmp_path / "job.yaml").write_text(json.dumps({
        "name": "j", "command": [sys.executable, "-c", code, str(out), "{a}{b}", "{a}", "{a}"],
        "vars": {"a": "x" * 100_000, "b": "y" * (MAX_ARG_BYTES - 100_000)},
        "environment": {"tmpdir": None}, "output": {"runs_dir": str(tmp_path / "runs")}}))
    (tmp_path / "job.sh").write_text(render_script(load_spec(tmp_path / "job.yaml"), "slurm").text())
    proc = subprocess.run([BASH, str(tmp_path / "job.sh")], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-500:]
    assert out.read_text() == f"{MAX_ARG_BYTES} 100000 100000"


def test_the_sweep_cap_holds_for_the_spec_grid_and_sweep_flags_together(tmp_path):
    (tmp_path / "job.yaml").write_text("name: j\nsweep: {train.seed: [" + ", ".join(map(str, range(40))) + "]}\n")
    values = ",".join(map(str, range(1, 51)))  # 40 x 50 = 2000 tasks; each part alone is allowed
    proc = subprocess.run([sys.executable, "-m", "cluster.cli", "submit", "job.yaml", "--executor", "local",
                           "--sweep", f"train.epochs={values}"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr == "job.yaml: sweep: makes 2000 tasks (allowed: at most 1000 in one sweep)\n"
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    again = subprocess.run([sys.executable, "-m", "cluster.cli", "submit", "job.yaml", "--executor", "local",
                            "--sweep", "train.seed=1,2"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert again.returncode == 2 and again.stderr.startswith("job.yaml: --sweep train.seed: is swept twice"), \
        again.stderr


@pytest.mark.parametrize("option, value, message", [
    ("channels", 10 ** 12, "train.options.channels: must be at most 4096 (got 1000000000000)"),
    ("classes", 5000, "train.options.classes: must be at most 1000 (got 5000)"),
    ("samples", 10 ** 7, "train.options.samples: must be at most 1000000 (got 10000000)"),
    ("length", 10 ** 6, "train.options.length: must be at most 65536 (got 1000000)"),
    ("noise", 1e9, "train.options.noise: must be between 0 and 1e+06 (got 1e+09)"),
])
def test_shipped_task_options_have_upper_bounds(tmp_path, monkeypatch, capsys, option, value, message):
    (tmp_path / "job.yaml").write_text(json.dumps({"name": "j", "train": {
        "task": "train.tasks.signal_cnn:SignalCNN", "options": {option: value}}}))
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", f"job.yaml: {message}")


def test_shipped_task_signal_memory_is_bounded(tmp_path, monkeypatch, capsys):
    (tmp_path / "job.yaml").write_text(json.dumps({"name": "j", "train": {
        "task": "train.tasks.signal_cnn:SignalCNN", "options": {"samples": 10 ** 6, "length": 65536}}}))
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml",
                  "job.yaml: train.options.samples: samples x length is 65536000000, generated in memory "
                  f"(allowed: at most {2 ** 28}, 1 GiB of float32)")


# --- every pattern on a spec value is a full, ASCII match ------------------------------------

@pytest.mark.parametrize("doc, message", [
    pytest.param({"train": {"device": "cpu\n"}}, "train.device: must be auto, cpu, cuda or cuda:N (got 'cpu\\n')",
                 id="device-newline"),
    pytest.param({"train": {"device": "cuda:\u0663"}}, "train.device: must be auto, cpu, cuda or cuda:N "
                 "(got 'cuda:\u0663')", id="device-arabic-digit"),
    pytest.param({"train": {"device": "cuda:\uff11"}}, "train.device: must be auto, cpu, cuda or cuda:N "
                 "(got 'cuda:\uff11')", id="device-fullwidth-digit"),
    pytest.param({"command": ["python3", "{a}"], "vars": {"a\n": 1}},
                 "vars.a\\n: invalid name (allowed: letters, digits, '_', not starting with a digit)", id="var-newline"),
    pytest.param({"command": ["python3"], "vars": {"\u00e4": 1}},
                 "vars.\u00e4: invalid name (allowed: letters, digits, '_', not starting with a digit)", id="var-umlaut"),
    pytest.param({"train": {"task": "train.tasks.signal_cnn:SignalCNN\n"}},
                 "train.task: must be 'package.module:ClassName' (got 'train.tasks.signal_cnn:SignalCNN\\n')",
                 id="task-newline"),
    pytest.param({"train": {"task": "tr\u00e4in.tasks:X"}},
                 "train.task: must be 'package.module:ClassName' (got 'tr\u00e4in.tasks:X')", id="task-umlaut"),
    pytest.param({"resources": {"mem": "\u0663G"}}, "resources.mem: cannot parse '\u0663G' "
                 f"({MEM_ALLOWED})", id="mem-arabic-digit"),
    pytest.param({"resources": {"time": "\u0663\u0660"}}, "resources.time: cannot parse '\u0663\u0660' "
                 f"({TIME_ALLOWED})", id="time-arabic-digits"),
    pytest.param({"resources": {"time": "\u0661:00:00"}}, "resources.time: cannot parse '\u0661:00:00' "
                 f"({TIME_ALLOWED})", id="time-arabic-hours"),
    pytest.param({"environment": {"env": {"A\u00e4": "1"}}}, "environment.env.A\u00e4: invalid value 'A\u00e4' "
                 "(allowed: NAME of letters, digits, '_')", id="env-name-umlaut"),
    pytest.param({"environment": {"modules": ["cuda/\u0661\u0661"]}}, "environment.modules[0]: invalid value "
                 "'cuda/\u0661\u0661' (allowed: a module name like cuda/11.1)", id="module-arabic-digits"),
    pytest.param({"resources": {"queue": "gpu\u00e4"}}, "resources.queue: invalid value 'gpu\u00e4' (allowed: "
                 "letters, digits, '.', '_', '-', '@')", id="queue-umlaut"),
])
def test_patterns_match_whole_ascii_values(tmp_path, monkeypatch, capsys, doc, message):
    (tmp_path / "job.yaml").write_text(json.dumps({"name": "j", **doc}))
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", f"job.yaml: {message}")


def test_the_name_pattern_is_whole_and_ascii(tmp_path, monkeypatch, capsys):
    (tmp_path / "job.yaml").write_text(json.dumps({"name": "j\u0663"}))
    check_refuses(tmp_path, monkeypatch, capsys, "job.yaml", "job.yaml: name: invalid value 'j\u0663' (allowed: "
                  "letters, digits, '.', '_', '-', at most 64)")


def test_the_login_path_compiles_no_pattern_of_ours_at_import():
    """``import cluster.spec`` (with the contract it validates through) compiles only the two
    YAML resolvers the loader replaces; the rest are compiled by ``re`` when first used."""
    probe = ("import re, sys\ncompile_ = re._compile\nmine = []\n"
             "def counted(pattern, flags):\n"
             "    if 'site-packages' not in sys._getframe(2).f_code.co_filename and "
             "'/python3' not in sys._getframe(2).f_code.co_filename: mine.append(pattern)\n"
             "    return compile_(pattern, flags)\n"
             "re._compile = counted\nimport yaml\nimport cluster.spec, cluster.units, train.contract.config\n"
             "print(len(mine))\n")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert proc.stdout.strip() == "2", proc.stdout + proc.stderr
