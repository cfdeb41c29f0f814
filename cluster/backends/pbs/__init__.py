"""PBS Pro / OpenPBS and Torque: the backend and the submitit plugin.

* ``backend``     -- ``PBSBackend``: what ``cluster`` asks of PBS (query, cancel, continuation, doctor)
* ``executor``    -- ``PBSExecutor``, the submitit plugin (entry points in pyproject.toml)
* ``script``      -- ``#PBS`` directives for PBS Pro (``select``) and Torque (``nodes=N:ppn=C``)
* ``jobid``       -- job ids as qsub prints them; ``PBSJobId.key`` is the submitit job id
* ``qstat``       -- one qstat call for all watched jobs; JSON (PBS Pro) and text (Torque) parsers
* ``states``      -- job_state letters and exit statuses -> submitit and project states
* ``watcher``     -- ``PBSInfoWatcher``, a submitit ``InfoWatcher``
* ``environment`` -- ``PBSJobEnvironment``, what a running job knows about itself

Slurm's Torque-compatible commands (package slurm-wlm-torque) are covered by the
"torque" flavor. Nothing here imports torch.
"""
