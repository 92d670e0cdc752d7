"""The operator console: HTML pages served by the API process (same origin, same roles).

See `api.console.pages` for the routes and docs/console.md for what an operator can do.
"""
