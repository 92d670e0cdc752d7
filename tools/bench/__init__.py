"""Benchmarks behind `vigil bench NAME --json FILE`; the runner is `tools.bench.runner`."""
