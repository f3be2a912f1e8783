"""slimbench: a reproducible benchmark and paper-replication harness for compressing transformers.

The core (this package) knows models, data, stages, metrics and results. Compression methods live in
``methods/`` and ``baselines/`` and register themselves as stages; Snakemake only calls :mod:`slimbench.cli`.
"""

__version__ = "0.1.0"
