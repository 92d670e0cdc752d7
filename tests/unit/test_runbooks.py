"""Every alert rule links a runbook page in the repository (docs/runbooks/<alert>.md),
one page per rule, and each page says how to diagnose and how to fix, with commands."""

from __future__ import annotations

import pytest
from ops_names import alert_rules
from promql_names import ROOT

RUNBOOKS = ROOT / "docs" / "runbooks"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: str(r["alert"]))
def test_runbook_link_resolves_to_a_page_with_commands(rule: dict[str, object]) -> None:
    link = rule["annotations"]["runbook_url"]  # type: ignore[index]
    page = ROOT / str(link)
    assert page.is_file(), f"{rule['alert']}: {link} does not exist"
    text = page.read_text(encoding="utf-8")
    assert text.startswith(f"# {rule['alert']}\n")
    assert "## Diagnose" in text and "## Fix" in text
    diagnose = text.split("## Diagnose", 1)[1].split("## Fix", 1)[0]
    assert "```sh" in diagnose, "the diagnosis gives commands to run"


def test_one_page_per_rule_and_no_orphans() -> None:
    names = [str(r["alert"]) for r in alert_rules()]
    assert len(names) == len(set(names)), "alert names are unique"
    pages = {p.stem for p in RUNBOOKS.glob("*.md")}
    assert pages == set(names)
