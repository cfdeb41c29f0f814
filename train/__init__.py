"""The training entrypoint that cluster jobs run: `python -m train --config SPEC --run-dir DIR`.

Importing this package does not import torch. Its one side effect: MKL's strict conditional
numerical reproducibility (``MKL_CBWR=AUTO,STRICT``) unless the environment already chooses a
mode, set before MKL's first call. Without it, MKL's gemm (under every Linear and, with oneDNN
off, every Conv) splits its sums by the thread count on some CPUs, and one step on 2 threads
differs in the last bits from the same step on 1 thread; with it the weights do not depend on
``train.threads`` (tests/train/test_train_training.py).
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
