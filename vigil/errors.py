"""Vigil's own exception hierarchy, so callers can catch what the project raises."""


class VigilError(Exception):
    """Base of every error Vigil raises on purpose."""


class ConfigError(VigilError):
    """Bad configuration; the message names the field and what is wrong with it."""
