"""Fault scenarios against real processes: `vigil faults run` (see vigil.faults.cli)."""
