#!/usr/bin/env bash
# The one test entry for people and CI: install what is missing, lint (ruff, the layer
# contracts, the type check), run every test.
# The integration tests start their own stack (tests/conftest.py) on test-only ports.
# Extra arguments go to pytest, e.g. `scripts/test.sh -m "not integration"`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/bootstrap.sh
echo "test: ruff"
.venv/bin/ruff check .
echo "test: import contracts"
.venv/bin/lint-imports
echo "test: types (mypy, [tool.mypy] in pyproject.toml)"
.venv/bin/mypy
echo "test: pytest"
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if (( rc == 5 )); then
  echo "test: pytest collected no tests - that is a failure" >&2
  exit 1
fi
exit "$rc"
