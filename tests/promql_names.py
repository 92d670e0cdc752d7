"""Metric names documented in infra/prometheus/METRICS.md and the ones a PromQL expression
uses, so that dashboards and alert rules can be checked against the documentation."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
METRICS_MD = ROOT / "infra" / "prometheus" / "METRICS.md"

_ROW = re.compile(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|\s*([^|]*)\|")
_HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

#: PromQL functions, aggregations, keywords and modifiers: never metric names.
PROMQL_WORDS = frozenset({
    "abs", "absent", "absent_over_time", "avg", "avg_over_time", "bool", "bottomk", "by",
    "ceil", "changes", "clamp", "clamp_max", "clamp_min", "count", "count_over_time",
    "count_values", "day_of_month", "day_of_week", "delta", "deriv", "exp", "floor", "group",
    "group_left", "group_right", "histogram_quantile", "holt_winters", "idelta", "ignoring",
    "increase", "inf", "irate", "label_join", "label_replace", "last_over_time", "ln",
    "log10", "log2", "max", "max_over_time", "min", "min_over_time", "nan", "offset", "on",
    "or", "and", "unless", "predict_linear", "quantile", "quantile_over_time", "rate",
    "resets", "round", "scalar", "sgn", "sort", "sort_desc", "sqrt", "stddev",
    "stddev_over_time", "stdvar", "sum", "sum_over_time", "time", "timestamp", "topk",
    "vector", "without"
})


def documented_metrics(path: Path = METRICS_MD) -> dict[str, str]:
    """{metric name: type} for every table row of METRICS.md."""
    out: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            out[m.group(1)] = m.group(2).strip().split()[0] if m.group(2).strip() else ""
    return out


_STATUS_ROW = re.compile(r"^\|\s*`([a-zA-Z_:][a-zA-Z0-9_:]*)`\s*\|[^|]*\|[^|]*\|\s*([^|]*)\|")


def planned_metrics(path: Path = METRICS_MD) -> set[str]:
    """Names METRICS.md lists as planned: reserved, exported by nothing, so no rule and no
    panel may use them (they would be alerts that never fire, graphs that stay empty)."""
    out = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _STATUS_ROW.match(line)
        if m and m.group(2).strip().lower().startswith("planned"):
            out.add(m.group(1))
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (Grafana's $variables are ignored)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # string literals
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery durations
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)  # dashboard variables
    names = set()
    for m in re.finditer(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?", text):
        word, call = m.group(1), m.group(2)
        if call or word in PROMQL_WORDS or re.fullmatch(r"\d+[smhdwy]", word):
            continue
        names.add(word)
    return names


def undocumented(expr: str, documented: dict[str, str]) -> set[str]:
    """Names in `expr` that METRICS.md does not list (histogram series map to their base)."""
    missing = set()
    for name in metric_names(expr):
        if name in documented:
            continue
        base = next((name[: -len(s)] for s in _HISTOGRAM_SUFFIXES if name.endswith(s)), None)
        if base is not None and documented.get(base) == "histogram":
            continue
        missing.add(name)
    return missing
