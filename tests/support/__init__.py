"""Helpers shared by the tests (not tests themselves).

Importable from any test as ``support`` because pyproject.toml's
``[tool.pytest.ini_options] pythonpath = ["tests"]`` puts tests/ on sys.path:

    from support.runs import REPO, cluster_cmd, last_run   # run the `cluster` command, find runs
    from support import slurm as sh                        # the local test Slurm cluster

Scripts run outside pytest (tests/benchmarks/) put tests/ on sys.path themselves.
"""
