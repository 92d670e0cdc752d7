"""Shared plumbing for Vigil's services: settings, errors, logging, the CLI, the dev stack."""

__version__ = "0.1.0"
