"""The commands, on a remote login node: the one seam between the CLI and a host.

:func:`dispatch` takes the parsed command line. A command with ``--host`` (``submit``, ``env``,
``status``), or one naming a run whose local record is remote (``logs``, ``cancel``, ``resume``,
``collect``), or a plain ``status`` while remote runs are recorded, is run here by the remote
``cluster`` over ssh; anything else returns None and the CLI runs it as before. The remote side
does the work with the very same code (``cluster status --json``, ``cluster logs --follow``, ...);
this module only moves arguments and answers, at one ``ssh`` call per command per host.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import time
from pathlib import Path
from typing import Any, Callable, TextIO

from cluster.errors import ClusterError
from cluster.remote import records, snapshot
from cluster.remote.hosts import Host, resolve
from cluster.remote.records import RemoteRun
from cluster.remote.ssh import RemoteError, Transport, classify

Echo = Callable[[str], None]
HUP_SAFE = ("import signal, sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            "signal.signal(signal.SIGHUP, lambda *a: sys.exit(129)); "
            "sys.argv[0] = 'cluster'; from cluster.cli import main; sys.exit(main())")
"""The remote ``cluster``: a lost connection (SIGHUP) becomes SystemExit, so a submit that has
not reached the scheduler yet removes its run directory as a refused one does. The current
directory is dropped from ``sys.path`` (``-c`` puts it first): a ``yaml.py`` in the remote home
must not shadow the toolkit; a snapshot's code comes through ``PYTHONPATH`` instead."""
RECONNECT_DELAYS = (1, 2, 4, 8, 15, 30, 30, 30, 30, 30)
"""Back-off of ``logs --follow`` after a lost connection (about four minutes in all)."""


def dispatch(args: argparse.Namespace, echo: Echo, out: TextIO,
             show_rows: Callable[[list, bool], None]) -> int | None:
    """Run a remote command; None when the command is not remote (the CLI runs it locally)."""
    host = getattr(args, "host", None)
    command = args.command
    if command == "submit" and host:
        return submit(args, resolve(host), echo)
    if command == "env" and host:
        return build_env(args, resolve(host), echo)
    if command == "status":
        return status(args, resolve(host) if host else None, show_rows)
    if command in ("logs", "resume"):
        run = records.find(args.run)
        if run is None:
            return _no_local_run(args.run, host)
        return logs(run, args, out) if command == "logs" else resume(run, args, echo)
    if command in ("cancel", "collect"):
        remote = [r for r in (records.find(ref) for ref in args.runs) if r is not None]
        if not remote:
            return _no_local_run(args.runs[0], host)
        if len(remote) != len(args.runs):
            raise ClusterError(f"cluster {command}: give remote runs and local runs in separate commands")
        return cancel(remote, echo) if command == "cancel" else collect(remote, args, echo)
    return None


def _no_local_run(ref: str, host: str | None) -> None:
    if host:
        raise ClusterError(f"{ref}: no record of a remote run here (runs/<id>/remote.json); remote runs are "
                           f"named by the run id cluster submit --host {host} printed")
    return None


def _cluster(host: Host, *words: str, python: str | None = None) -> list[str]:
    """The remote ``cluster`` command: the remote venv's Python (``python``: its absolute path, for
    commands that start in a snapshot), run so that a HUP is an exit."""
    return [python or host.remote_python, "-c", HUP_SAFE, *words]


def _by_host(runs: list[RemoteRun]) -> dict[Host, list[RemoteRun]]:
    grouped: dict[Host, list[RemoteRun]] = {}
    for run in runs:
        grouped.setdefault(run.host, []).append(run)
    return grouped


# ---------------------------------------------------------------- snapshot + submit


def _send_snapshot(spec_path: Path, transport: Transport, echo: Echo) -> tuple[snapshot.Snapshot, dict]:
    snap = snapshot.build(spec_path, snapshot.project_root(Path.cwd()))
    for rel in snap.left_out:
        echo(f"snapshot: left out {rel} (looks like a secret; list it in {snapshot.INCLUDE_FILE} to send it)")
    sent = snapshot.send(snap, transport, echo)
    what = (f"sent {sent['files_sent']} files, {sent['bytes_sent']} bytes" if sent["files_sent"] or sent["bytes_sent"]
            else "already there, nothing sent")
    dirty = " (dirty)" if snap.git.get("dirty") else ""
    echo(f"snapshot {snap.id}: {len(snap.files)} files{dirty}, {what} ({transport.host.name}:{sent['path']})")
    return snap, sent


def _spec_rel(spec: str, snap: snapshot.Snapshot) -> str:
    try:
        return Path(spec).resolve().relative_to(snap.root).as_posix()
    except ValueError:
        raise ClusterError(f"{spec}: outside the project {snap.root}; run cluster from the project that holds it") \
            from None


def submit(args: argparse.Namespace, host: Host, echo: Echo) -> int:
    """Snapshot, then the remote ``cluster submit`` in it; a local record once it says it submitted."""
    from cluster.spec import load_spec

    spec = load_spec(args.spec, args.set)  # a bad spec is refused here, before anything is sent
    transport = Transport(host)
    snap, sent = _send_snapshot(Path(args.spec), transport, echo)
    snap_dir = str(sent["path"])
    runs_dir = str(Path(snap_dir).parent.parent / "runs")
    words = ["submit", _spec_rel(args.spec, snap), *[w for s in args.set for w in ("--set", s)],
             "--set", f"output.runs_dir={runs_dir}"]
    words += [w for s in args.sweep for w in ("--sweep", s)]
    words += ["--executor", args.executor] if args.executor else []
    words += ["--wait"] if args.wait else []
    proc = transport.popen(_cluster(host, *words, python=str(sent["python"])), cwd=snap_dir,
                           env=_snapshot_env(snap_dir, snap.hash))
    record: RemoteRun | None = None
    assert proc.stdout is not None
    for raw in proc.stdout:
        line = raw.decode(errors="replace").rstrip("\n")
        if record is not None and line.startswith("  logs: cluster logs "):
            line = f"  logs: cluster logs {record.id}   (on {host.name}: {record.remote_dir}/logs)"
        echo(line)
        if record is None and line.strip().startswith(("run directory:", "sweep directory:")):
            remote_dir = line.split(":", 1)[1].strip()
            record = records.write(Path(spec.runs_dir_path()), Path(remote_dir).name, {
                "name": spec.name, "host": host.to_dict(), "remote_run_dir": remote_dir,
                "sweep": line.strip().startswith("sweep"), "snapshot": {"id": snap.id, "hash": snap.hash,
                                                                        "path": snap_dir, **sent},
                "git": snap.git, "spec": args.spec, "submitted": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            })
            echo(f"  local record: {record.path / records.RECORD}   (status, logs, collect work from here)")
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = proc.wait()
    if code == 0:
        return 0
    if record is None:
        _raise_remote_failure(host, code, stderr, "cluster submit")
    if code == 255:
        echo(f"connection to {host.name} lost while waiting; the run goes on: cluster status, "
             f"cluster logs --follow {record.id}")
    _echo_stderr(stderr, echo)
    return 1


def _snapshot_env(snap_dir: str, digest: str) -> dict[str, str]:
    """The snapshot's code first on the job's import path, and its hash for the job to check."""
    return {"PYTHONPATH": snap_dir, "CLUSTER_SNAPSHOT": snap_dir, "CLUSTER_SNAPSHOT_SHA256": digest}


def _raise_remote_failure(host: Host, code: int, stderr: str, doing: str) -> None:
    lines = [l for l in stderr.strip().splitlines() if l.strip()]
    if code not in (255, 127) and lines and lines[-1].startswith("cluster "):
        raise RemoteError(f"{host.name}: {lines[-1]}")  # the remote cluster's own one line
    raise classify(host, code, stderr, doing)


def _echo_stderr(stderr: str, echo: Echo) -> None:
    for line in stderr.strip().splitlines()[-5:]:
        echo(line)


def build_env(args: argparse.Namespace, host: Host, echo: Echo) -> int:
    """``cluster env SPEC --host H``: the snapshot, then a venv on the host with this project (from
    the snapshot) and the spec's requirements, pip's temp files under a private WORKDIR/tmp."""
    from cluster.spec import load_spec

    if args.on_queue:
        raise ClusterError(f"cluster env --host {host.name}: --on-queue is not available over ssh yet; build on the "
                           f"login node (this command without --on-queue)")
    spec = load_spec(args.spec, args.set)
    transport = Transport(host)
    snap, sent = _send_snapshot(Path(args.spec), transport, echo)
    workdir = str(Path(str(sent["path"])).parent.parent)
    tmp = f"{workdir}/tmp"
    venv = host.venv_dir
    python = args.python or host.python
    steps = [
        f"mkdir -p -m 700 {shlex.quote(tmp)}",
        f"if [ ! -x {shlex.quote(venv)}/bin/python ]; then {shlex.join([python, '-m', 'venv', venv])}; fi",
        shlex.join([f"{venv}/bin/python", "-m", "pip", "install", "--no-input", str(sent["path"]),
                    *spec.environment.requirements]),
        shlex.join([f"{venv}/bin/python", "-c", "import cluster.cli, train, submitit, yaml; print('ok')"]),
    ]
    env = {**host.env, "TMPDIR": tmp, "PIP_CACHE_DIR": f"{tmp}/pip-cache"}
    line = "export " + " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) + " && " + " && ".join(steps)
    echo(f"env: building {host.name}:{venv} (pip temp: {tmp})")
    proc = transport.run_line(line, doing="cluster env", timeout=3600)
    output = proc.stdout.decode(errors="replace").strip().splitlines()
    for text in output[-3:]:
        echo(f"  pip: {text}")
    if proc.returncode != 0:
        _raise_remote_failure(host, proc.returncode, proc.stderr.decode(errors="replace"), "cluster env")
    echo(f"env: ready: {host.name}:{venv} runs cluster there")
    return 0


# ---------------------------------------------------------------- status, logs, cancel, resume


def _remote_rows(host: Host, runs: list[RemoteRun] | None, transport: Transport) -> list[dict[str, Any]]:
    """One ssh: the remote ``cluster status --json`` over the host's runs directory."""
    runs_dir = f"{host.workdir}/runs"
    proc = transport.run_line(shlex.join(["env", *[f"{k}={v}" for k, v in host.env.items()],
                                          *_cluster(host, "status", "--json", "--runs-dir", runs_dir)]),
                              doing="cluster status")
    if proc.returncode != 0:
        _raise_remote_failure(host, proc.returncode, proc.stderr.decode(errors="replace"), "cluster status")
    try:
        rows = json.loads(proc.stdout.decode())
    except ValueError:
        raise RemoteError(f"{host.name}: cluster status --json gave no JSON; is the remote cluster current? "
                          f"(cluster env SPEC --host {host.name})") from None
    if runs is None:
        return rows
    result: list[dict[str, Any]] = []
    for run in runs:  # a sweep's record stands for its tasks (rows under its remote directory)
        mine = [row for row in rows if row.get("run_id") == run.id
                or (run.data.get("sweep") and Path(str(row.get("path", ""))).parent.name == run.id)]
        result += mine or [{"run_id": run.id, "name": run.data.get("name", ""), "scheduler": "-", "job_id": None,
                            "state": "unknown", "path": run.remote_dir, "diagnosis": f"not found on {host.name}",
                            "action": f"remove {run.path} if that run was deleted there"}]
    return result


def status(args: argparse.Namespace, host: Host | None, show_rows: Callable[[list, bool], None]) -> int | None:
    """Local and remote runs in one table: one ssh per host per refresh."""
    from cluster.runs import TERMINAL_STATES
    from cluster.status import Row, discover_runs, rows_for

    if args.runs and host:
        raise ClusterError(f"cluster status --host {host.name}: name no runs (it lists the host's own)")
    found = {ref: records.find(ref, args.runs_dir) for ref in args.runs}
    remote = [r for r in found.values() if r] if args.runs else [] if host else records.discover(args.runs_dir)
    if host is None and not remote:
        return None  # no remote run in sight: the plain local status
    local_refs = [ref for ref, r in found.items() if r is None]
    local = discover_runs(local_refs, args.runs_dir) if local_refs or (not args.runs and not host) else []
    groups = {host: None} if host else _by_host(remote)
    transports = {h: Transport(h) for h in groups}
    while True:
        rows = rows_for(local) if local else []
        for h, runs in groups.items():
            for data in _remote_rows(h, runs, transports[h]):
                data = {k: v for k, v in data.items() if k in Row.__dataclass_fields__}
                data["scheduler"] = f"{data.get('scheduler', '-')}@{h.name}"
                rows.append(Row(**data))
        show_rows(rows, args.json)
        if not args.watch or all(r.state in TERMINAL_STATES for r in rows):
            return 0
        time.sleep(args.interval)


def logs(run: RemoteRun, args: argparse.Namespace, out: TextIO) -> int:
    """The remote ``cluster logs``; with ``--follow`` one stream that resumes where it broke."""
    host, transport = run.host, Transport(run.host)
    flags = ["--err"] if args.err else []
    if not args.follow:
        proc = transport.run(_cluster(host, "logs", run.remote_dir, *flags,
                                      *(["--tail", str(args.tail)] if args.tail is not None else [])),
                             doing="cluster logs")
        out.write(proc.stdout.decode(errors="replace"))
        return 0
    return _follow(run, transport, flags, args.tail, out)


def _follow(run: RemoteRun, transport: Transport, flags: list[str], tail: int | None, out: TextIO) -> int:
    """Follow a remote log through lost connections, showing no byte twice and losing none.

    The remote ``logs --follow`` prints the whole history, then what is appended: its output
    is one growing stream, so after a reconnect the bytes already shown are skipped. The first
    connection prints the history once more before a marker line, so that ``--tail`` can cut it
    here and the stream still knows how much it has shown."""
    host = run.host
    marker = f"----- cluster-train remote history end {os.urandom(8).hex()} -----\n".encode()
    follow = shlex.join(["env", *[f"{k}={v}" for k, v in host.env.items()],
                         *_cluster(host, "logs", run.remote_dir, *flags, "--follow")])
    history = shlex.join(["env", *[f"{k}={v}" for k, v in host.env.items()],
                          *_cluster(host, "logs", run.remote_dir, *flags)])
    shown = None  # bytes of the full stream shown so far (None: the history is not in yet)
    failures = 0
    while True:
        first = shown is None
        line = f"{history} && printf %s {shlex.quote(marker.decode())} && {follow}" if first else follow
        proc = transport.popen_line(line)
        assert proc.stdout is not None
        if first:
            shown = _show_history(proc.stdout, marker, tail, out)
        skip = shown
        for chunk in iter(lambda: proc.stdout.read1(65536), b""):
            if skip:
                cut, skip = min(skip, len(chunk)), skip - min(skip, len(chunk))
                chunk = chunk[cut:]
            if chunk:
                out.write(chunk.decode(errors="replace"))
                out.flush()
                shown += len(chunk)
                failures = 0
        stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
        code = proc.wait()
        if code == 0:
            return 0
        if code != 255 or shown is None:
            _raise_remote_failure(host, code, stderr, "cluster logs --follow")
        if failures >= len(RECONNECT_DELAYS):
            raise RemoteError(f"lost the connection to {host.name} and could not reconnect "
                              f"({stderr.strip().splitlines()[-1] if stderr.strip() else 'no answer'}); "
                              f"run cluster logs --follow {run.id} again later")
        time.sleep(RECONNECT_DELAYS[failures])
        failures += 1


def _show_history(stream, marker: bytes, tail: int | None, out: TextIO) -> int | None:
    """Read the history up to the marker, show it (its last ``tail`` lines); its length in bytes,
    or None when the connection broke before the marker."""
    lines: list[bytes] = []
    for raw in iter(stream.readline, b""):
        if raw.endswith(marker):  # a log that does not end in a newline has the marker on its last line
            if raw[:-len(marker)]:
                lines.append(raw[:-len(marker)])
            break
        lines.append(raw)
    else:
        return None
    text = b"".join(lines)
    if len(lines) == 1 and lines[0].startswith(b"(no "):  # "(no stdout yet ...)": not part of the stream
        return 0
    shown = lines if tail is None else lines[len(lines) - tail:] if tail else []
    out.write(b"".join(shown).decode(errors="replace"))
    out.flush()
    return len(text)


def cancel(runs: list[RemoteRun], echo: Echo) -> int:
    """The remote ``cluster cancel``: one ssh per host."""
    for host, group in _by_host(runs).items():
        proc = Transport(host).run(_cluster(host, "cancel", *[r.remote_dir for r in group]), doing="cluster cancel")
        for line in proc.stdout.decode(errors="replace").splitlines():
            echo(line)
    return 0


def resume(run: RemoteRun, args: argparse.Namespace, echo: Echo) -> int:
    """The remote ``cluster resume``, in the run's own snapshot (the code it started with)."""
    host = run.host
    snap_dir = str(run.data["snapshot"]["path"])
    proc = Transport(host).popen(_cluster(host, "resume", run.remote_dir, *(["--wait"] if args.wait else []),
                                          python=str(run.data["snapshot"]["python"])),
                                 cwd=snap_dir, env=_snapshot_env(snap_dir, str(run.data["snapshot"]["hash"])))
    assert proc.stdout is not None
    for raw in proc.stdout:
        echo(raw.decode(errors="replace").rstrip("\n"))
    stderr = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    code = proc.wait()
    if code not in (0, 1):
        _raise_remote_failure(host, code, stderr, "cluster resume")
    if code == 1 and not args.wait:
        _raise_remote_failure(host, code, stderr, "cluster resume")
    return code


# ---------------------------------------------------------------- collect


def collect(runs: list[RemoteRun], args: argparse.Namespace, echo: Echo) -> int:
    """The remote ``cluster collect`` into a folder of the host, then rsync of that folder only
    (``--partial``: an interrupted copy resumes) into ``--to``."""
    import hashlib
    import subprocess

    dest = Path(args.to)
    dest.mkdir(parents=True, exist_ok=True)
    for host, group in _by_host(runs).items():
        transport = Transport(host)
        key = hashlib.sha256("\0".join(sorted(r.remote_dir for r in group)).encode()).hexdigest()[:12]
        folder = f"{host.workdir}/collected/{key}"
        proc = transport.run(_cluster(host, "collect", *[r.remote_dir for r in group], "--to", folder,
                                      "--metric", args.metric), doing="cluster collect")
        for line in proc.stdout.decode(errors="replace").splitlines():
            echo(line.replace(folder, str(dest)))
        pull = ["rsync", "-rlt", "--partial", "--protect-args", "-e", transport.rsync_shell(),
                f"{host.host}:{folder}/", f"{dest}/"]
        copied = subprocess.run(pull, capture_output=True, timeout=24 * 3600)
        if copied.returncode != 0:
            raise classify(host, 255 if copied.returncode in (12, 255) else copied.returncode,
                           copied.stderr.decode(errors="replace") or "Connection closed", "copy the collected runs")
        echo(f"collect: copied {len(group)} run{'s' if len(group) > 1 else ''} from {host.name} into {dest}/")
    return 0
