"""Ordered SQL migrations (``NNNN_name.sql``) applied by `projections.migrate`."""
