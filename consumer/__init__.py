"""Sentry generic-events consumer worker."""
