"""The `vigil` command: the composition root, the one place that wires every layer together.

Nothing imports this package; it imports the services (and, lazily, the tooling in
`tools/`) to register their subcommands. See docs/architecture.md for the layers.
"""
