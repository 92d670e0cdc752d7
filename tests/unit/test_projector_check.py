"""`projections.check` knows, for every event type the projector folds, which row proves
the event landed: a new event type without an entry would go unchecked."""

from __future__ import annotations

from projections.check import _ROW, NO_ROW
from projections.handlers import FOLDS
from projections.writer import APPEND_COLUMNS


def test_every_folded_event_type_has_a_row_to_look_for() -> None:
    folded = {cls.__name__ for cls in FOLDS}
    assert folded - set(_ROW) - NO_ROW == set()
    assert set(_ROW) - folded == set()


def test_append_tables_are_looked_up_by_their_event_id() -> None:
    for name, (table, col, attr) in _ROW.items():
        if table in APPEND_COLUMNS and table != "erasures":
            assert APPEND_COLUMNS[table][0] in ("event_id", "detection_id"), name
            assert col == attr == "event_id", name
