"""`vigil bench api --quick` end to end: seeding through the projector's writer, the API
as its own process, wrk as the load generator. Only the shape of the result and the
absence of errors are checked; timings belong to the benchmark, not to a test."""

from __future__ import annotations

import psycopg
import pytest

from tools.bench.api import run
from vigil.settings import get_settings

pytestmark = pytest.mark.integration


def test_quick_api_bench_runs_clean(stack: dict[str, str]) -> None:
    get_settings.cache_clear()
    result = run(quick=True)
    assert result.name == "api" and result.unit == "req/s"
    for name in ("health", "alerts", "events"):
        run_ = result.details[name]
        assert run_["requests"] > 0 and run_["errors"] == 0, (name, run_)
        assert run_["p50_ms"] <= run_["p95_ms"] <= run_["p99_ms"]
        assert run_["server_cpu_ms_per_request"] > 0
    # A listing page is real data, not an empty list or an error body.
    assert result.details["alerts"]["bytes_per_response"] > 5000
    assert result.details["events"]["bytes_per_response"] > 5000
    assert result.ratio == pytest.approx(result.value / result.baseline)
    # The scratch schemas are gone.
    dsn = "postgresql://" + get_settings().database_url.split("://", 1)[1]
    with psycopg.connect(dsn) as conn:
        left = conn.execute("SELECT count(*) FROM pg_namespace WHERE nspname LIKE "
                            "'bench\\_api\\_%%' OR nspname LIKE 'bench\\_apikeys\\_%%'"
                            ).fetchone()
    assert left is not None and left[0] == 0
