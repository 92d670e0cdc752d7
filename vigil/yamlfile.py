"""Reading the YAML files people write (site, edge, scenario): one place for the errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from vigil.errors import ConfigError


def load_yaml(path: str | Path, what: str) -> Any:
    """Parse a YAML file; a missing or malformed file is a ConfigError naming it."""
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text())
    except OSError as exc:
        raise ConfigError(f"cannot read {what} {p}: {exc}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{what} {p} is not valid YAML: {exc}") from None
