"""Tooling, not product: benchmarks, the fault suite, the dev stack, the demo, test kits.

No product package imports it (an import-linter contract in pyproject.toml says so) and
the Docker image leaves it out; the `vigil` command loads it lazily for `vigil bench`,
`vigil faults`, `vigil demo` and `vigil dev`.
"""
