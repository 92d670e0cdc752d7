"""Derived event ids are the published UUIDv5 of their parts: replays and other
implementations (a downstream deduplicating by id) must get the same id."""

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas.events import DERIVED_ID_NAMESPACE, derived_event_id

_parts = st.lists(st.one_of(st.text(), st.integers(), st.floats(allow_nan=False),
                            st.none(), st.datetimes(timezones=st.just(UTC))), max_size=6)


@given(_parts)
def test_derived_event_id_is_uuid5_of_the_joined_parts(parts: list[object]) -> None:
    expected = str(uuid.uuid5(DERIVED_ID_NAMESPACE, "|".join(str(p) for p in parts)))
    assert derived_event_id(*parts) == expected


def test_derived_event_id_known_value() -> None:
    """Pinned, so a change of namespace or joining rule cannot pass unnoticed."""
    at = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
    got = derived_event_id("synthetic-frame", "bcam0000", at, 30)
    assert got == "ab873526-c7bc-5a1b-b93b-61d22fc7ad91"  # as the uuid module gave it
    assert uuid.UUID(got).version == 5
