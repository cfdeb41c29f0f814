"""Running the same ``cluster`` commands on a cluster's login node, from your own machine.

A remote host is a way of running the same commands elsewhere: the CLI hands a command with
``--host NAME`` (or one on a run whose local record is remote) to :func:`commands.dispatch`,
which runs the remote ``cluster`` over one multiplexed OpenSSH connection and keeps a small
local record of each remote run. Nothing else of the toolkit knows about hosts.

- :mod:`cluster.remote.hosts`: host profiles (``~/.config/cluster-train/hosts.yaml``, or a
  plain ``[user@]host[:port]`` / ``~/.ssh/config`` ``Host`` name).
- :mod:`cluster.remote.ssh`: the OpenSSH transport (argv building, the control master in a
  private 0700 directory, ``BatchMode=yes``, quoting for the remote shell, failures as one line).
- :mod:`cluster.remote.snapshot`: the frozen, content-addressed copy of the code a job runs.
- :mod:`cluster.remote.records`: the laptop's record of a remote run (``runs/<id>/remote.json``).
- :mod:`cluster.remote.commands`: submit, status, logs, cancel, resume, collect and env over ssh.

Login-node code: standard library and yaml only (no torch, no submitit).
"""
