"""Fail early, with the reason, when the Python that `make` would build the venv with is too old."""

import sys

REQUIRED = (3, 11)

if sys.version_info < REQUIRED:
    found = ".".join(map(str, sys.version_info[:3]))
    sys.exit(
        f"Python {REQUIRED[0]}.{REQUIRED[1]} or newer is needed, {sys.executable} is {found}; "
        "run make with PYTHON=/path/to/python3.11 (or newer)"
    )
