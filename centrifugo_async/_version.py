"""The package's version, read back from its installed metadata.

``pyproject.toml`` is the one place the version is written. Reading it from the
distribution's metadata keeps ``centrifugo_async.__version__`` and
``centrifugo-async --version`` (click reads the same metadata) equal by
construction, for a wheel and for an editable install alike.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

__all__ = ["DISTRIBUTION", "__version__"]

DISTRIBUTION = "centrifugo-async"


def _installed_version() -> str:
    try:
        return version(DISTRIBUTION)
    except PackageNotFoundError:  # a source tree on sys.path that was never installed
        return "0+unknown"


__version__ = _installed_version()
