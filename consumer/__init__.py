"""Sentry generic-events consumer worker.

The pipeline's compiled modules, where a current build exists, are put in place before anything
imports them (consumer/native.py).
"""

from consumer import native

native.install()
