"""User-facing errors: each says what is wrong and how to fix it, and is raised before any heavy work."""


class SlimbenchError(Exception):
    """Base class; the CLI prints these without a traceback and exits with status 2."""


class ConfigError(SlimbenchError):
    """The configuration names something unknown or a value out of range."""


class DataNotFoundError(SlimbenchError):
    """A dataset or checkpoint is missing locally and may not be downloaded."""
