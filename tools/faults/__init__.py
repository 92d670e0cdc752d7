"""Fault scenarios against real processes: `vigil faults run` (see tools.faults.cli)."""
