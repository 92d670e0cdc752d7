"""Kits the tests (and benchmarks) build their worlds with; nothing in the product uses them."""
