"""Projections: folds of the public topics into PostgreSQL read models, and replay/audit."""
