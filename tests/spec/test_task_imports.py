"""A task module imported by `cluster check`/`render`/`submit` cannot end, hang or write into the
command, nor leave a process behind: it is imported in a subprocess (train/contract/task_probe.py).

Each hostile module below is a working task but for one thing it does at import. Every command
must end in one line naming the spec and ``train.task``, exit 2, print nothing on stdout (for
``render``: the batch script would hold what the module printed), create no run directory and
leave no process of the module's running. Real processes throughout; the time bound is lowered
(``CLUSTER_TASK_IMPORT_TIMEOUT``) so that the hanging module costs seconds, not twenty.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from support.runs import CLUSTER

TASK = '''
from dataclasses import dataclass


class T:
    @dataclass(frozen=True)
    class Options:
        hidden: int = 16
        sizes: tuple[int, ...] = (1, 2)

        def __post_init__(self):
            if self.hidden < 1:
                raise ValueError("hidden must be positive")

    def data(self): ...
    def model(self): ...
    def loss(self, output, target, reduction): ...
'''

# What each module does at import (MARK: a word unique to the test, found in leftover processes).
HOSTILE = {
    "system_exit": ("raise SystemExit(0)", "importing 'hostile.system_exit' raised SystemExit(0)"),
    "os_exit": ("import os; os._exit(0)", "importing 'hostile.os_exit' ended its process (exit status 0)"),
    "base_exception": ("raise BaseException('no')", "importing 'hostile.base_exception' raised BaseException(no)"),
    "keyboard": ("raise KeyboardInterrupt", "importing 'hostile.keyboard' raised KeyboardInterrupt"),
    "prints": ("print('#SBATCH --wrap=MARK')", "'hostile.prints' wrote 32 bytes to stdout when imported"),
    "writes_fd": ("import os; os.write(1, b'MARK')", "'hostile.writes_fd' wrote 16 bytes to stdout when imported"),
    "sleeps": ("import time; time.sleep(600)  # MARK", "importing 'hostile.sleeps' took more than 2 s"),
    "spawns": ("import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)', "
               "'MARK'])", "'hostile.spawns' started a process when imported (pid "),
    # Forked twice, in a session of its own: it is no child of the importer, yet found and killed.
    "daemon": ("import subprocess, sys, time; subprocess.run(['setsid', 'sh', '-c', sys.executable + "
               "' -c \"import time; time.sleep(600)\" MARK &']); time.sleep(0.5)",
               "'hostile.daemon' started a process when imported (pid "),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    root = tmp_path_factory.mktemp("hostile")
    mark = f"ctmark{uuid.uuid4().hex[:10]}"
    (root / "hostile").mkdir()
    (root / "hostile" / "__init__.py").write_text("")
    (root / "hostile" / "good.py").write_text(TASK)
    for name, (code, _) in HOSTILE.items():
        (root / "hostile" / f"{name}.py").write_text(code.replace("MARK", mark) + "\n" + TASK)
    return root, mark


def _cluster(args: list[str], cwd: Path, package: Path, command: list[str] = CLUSTER) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(package), CLUSTER_TASK_IMPORT_TIMEOUT="2")
    return subprocess.run([*command, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def _spec(tmp_path: Path, task: str, options: dict | None = None) -> Path:
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({"name": "j", "scheduler": {"kind": "local"}, "environment": {"tmpdir": None},
                                "train": {"task": task, "options": options or {"hidden": 3}}}))
    return spec


def _left_running(mark: str) -> list[str]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if mark in cmdline and "pytest" not in cmdline:
            found.append(f"{pid}: {cmdline}")
    return found


@pytest.mark.parametrize("module", sorted(HOSTILE))
def test_a_hostile_task_module_ends_check_render_and_submit_in_one_line(
        hostile: tuple[Path, str], tmp_path: Path, module: str) -> None:
    package, mark = hostile
    spec = _spec(tmp_path, f"hostile.{module}:T")
    for command in (["check"], ["render"], ["submit", "--executor", "local"]):
        proc = _cluster([command[0], str(spec), *command[1:]], tmp_path, package)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2, (command, proc.stdout, proc.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"{spec}: train.task: "), (command, proc.stderr)
        assert HOSTILE[module][1] in lines[0], (command, lines[0])
        assert proc.stdout == "" and (mark not in proc.stderr or module in ("spawns", "daemon")), command
        assert not (tmp_path / "runs").exists(), command
        assert _left_running(mark) == [], command


def test_a_good_task_is_validated_by_its_own_rules_in_the_probe(hostile: tuple[Path, str], tmp_path: Path) -> None:
    package, _ = hostile
    proc = _cluster(["render", str(_spec(tmp_path, "hostile.good:T", {"hidden": 5, "sizes": [3, 4]}))], tmp_path,
                    package)
    assert proc.returncode == 0, proc.stderr
    assert "task: hostile.good:T" in proc.stdout and "hidden: 5" in proc.stdout and "- 4" in proc.stdout
    for options, says in (({"hidden": 0}, "train.options: hidden must be positive"),
                          ({"hiden": 1}, "train.options.hiden: unknown option (valid: hidden, sizes)"),
                          ({"sizes": ["a"]}, "train.options.sizes[0]: must be an integer")):
        proc = _cluster(["check", str(_spec(tmp_path, "hostile.good:T", options))], tmp_path, package)
        assert proc.returncode == 2 and proc.stderr.startswith(f"{tmp_path / 'job.yaml'}: {says}"), proc.stderr


def test_the_submit_directory_does_not_shadow_the_toolkit_in_the_probe(hostile: tuple[Path, str],
                                                                       tmp_path: Path) -> None:
    """Modules in the directory where `cluster` runs (a user's json.py, a train/ folder) are not
    found before the standard library's or the toolkit's by the probe's own imports (the
    console script, as users run it: ``python -m`` would put the directory first in `cluster`
    itself)."""
    package, _ = hostile
    script = Path(sys.executable).with_name("cluster")
    if not script.exists():
        pytest.skip("no cluster console script beside this interpreter")
    (tmp_path / "json.py").write_text("raise SystemExit('the submit directory shadowed json')\n")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "__init__.py").write_text("raise SystemExit('the submit directory shadowed train')\n")
    proc = _cluster(["check", str(_spec(tmp_path, "hostile.good:T"))], tmp_path, package, [str(script)])
    assert proc.returncode == 0, proc.stderr
    assert "hidden: 3" in proc.stdout


def test_a_sweep_over_a_task_option_validates_every_point_by_the_task_s_rules(hostile: tuple[Path, str], tmp_path: Path) -> None:
    """Every point's options are validated by the task's rules (a bad value among them is named)."""
    package, _ = hostile
    spec = _spec(tmp_path, "hostile.good:T")
    data = json.loads(spec.read_text())
    data["sweep"] = {"train.options.hidden": list(range(1, 40)) + [0]}
    spec.write_text(json.dumps(data))
    proc = _cluster(["check", str(spec)], tmp_path, package)
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.strip() == (f"{spec}: sweep.train.options.hidden: value 0: hidden must be positive"), proc.stderr


def test_builtin_tasks_are_imported_in_process() -> None:
    """Ours (train.tasks.*) need no probe: `cluster check` of signal_cnn starts no subprocess."""
    code = ("import subprocess, sys\nstarted = []\nreal = subprocess.Popen.__init__\n"
            "def counted(self, *a, **k):\n    started.append(a)\n    real(self, *a, **k)\n"
            "subprocess.Popen.__init__ = counted\nfrom cluster.cli import main\n"
            "assert main(['check', 'jobs/signal_cnn.yaml']) == 0\nprint('STARTED', len(started), file=sys.stderr)\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[2], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0 and "STARTED 0" in proc.stderr, proc.stderr
