"""The training entrypoint that cluster jobs run: `python -m train --config SPEC --run-dir DIR`.

Importing this package has no side effects and does not import torch.
"""
