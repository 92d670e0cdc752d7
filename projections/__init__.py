"""Projections: folds of the public topics into PostgreSQL read models; replay and audit.

The read-model tables themselves are part of the contract (`schemas.tables`), shared with
the API. Modules by role:
- `migrations/` ordered SQL files, applied by `migrate` (`vigil db upgrade`);
- `handlers`   one fold function per event type (event -> rows/statements);
- `writer`     applies a folded batch (COPY + INSERT ... ON CONFLICT, ordered upserts);
- `offsets`    the read position, stored next to the rows in the same transaction;
- `projector`  `vigil project`: consume, fold, write + offsets in one transaction;
- `replay`     `vigil replay --into SCHEMA | --verify`;
- `audit`      `vigil audit alert ID` (evidence fetched from the log);
- `erasure`, `retention`  `vigil erase`, `vigil db retention`;
"""
