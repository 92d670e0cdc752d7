"""The README's commands cannot rot: every `vigil …` it names parses, and the two commands
it promises exist as make targets that CI uses."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from vigil_cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()


def _vigil_commands() -> list[str]:
    found = set()
    for snippet in re.findall(r"`(vigil [^`]+)`", README) + re.findall(
        r"^\s*(vigil [^#\n]+)", README, re.M
    ):
        found.add(snippet.strip())
    return sorted(found)


def _unknown_subcommand(parser, words: list[str]) -> str | None:
    """Walk the subparsers along `words`; the first word that should be a subcommand of
    the parser reached but is not one of them (None if all are known)."""
    current = parser
    for w in words:
        subs = [a for a in current._actions if a.__class__.__name__ == "_SubParsersAction"]
        if not subs:
            return None  # reached a leaf command: the rest are its arguments
        if w not in subs[0].choices:
            return w
        current = subs[0].choices[w]
    return None


@pytest.mark.parametrize("command", _vigil_commands())
def test_every_vigil_command_in_the_readme_exists(command: str) -> None:
    # `a | b | c` in the README lists alternatives: check each one.
    head, *alts = command.replace("…", "").split("|")
    words = shlex.split(head)[1:]
    assert words, command
    variants = [words] + [[*words[:-1], *shlex.split(a)[:1]] for a in alts if a.strip()]
    for v in variants:
        bad = _unknown_subcommand(build_parser(), v)
        assert bad is None, f"README names `vigil {' '.join(v)}`: no subcommand {bad!r}"


def test_readme_has_the_two_commands_and_ci_runs_the_test_one() -> None:
    assert "make demo" in README and "make test" in README
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^demo:", makefile, re.M) and re.search(r"^test:", makefile, re.M)
    assert "make test" in (ROOT / ".ci" / "run").read_text()
