"""slimbench: a reproducible benchmark and paper-replication harness for compressing transformers.

The core (this package) knows models, data, stages, metrics and results. Compression methods live in
``methods/`` and ``baselines/`` and register themselves as stages; Snakemake only calls :mod:`slimbench.cli`.
"""

import os

# torch.cuda.is_available() asks NVML, not the CUDA driver. A library that calls it on import (torchao does)
# would otherwise start CUDA before a job claims its GPU (slimbench.devices), so CUDA_VISIBLE_DEVICES came too
# late and every job of a 2-GPU host ran on GPU 0 (seen on an H200 x2, 2026-11-29: the second GPU stayed idle).
os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")

__version__ = "0.1.0"
