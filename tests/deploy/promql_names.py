"""Metric names and label matchers used by a PromQL expression (enough PromQL for our queries).

Not a full parser: strings, range/subquery brackets and grouping clauses are removed, then every
remaining identifier that is not a function call, keyword or number is a metric name. Label
matchers are read from the ``{...}`` block that follows a metric name.
"""

from __future__ import annotations

import re

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)(\s*\()?")
_SELECTOR = re.compile(r"(?<![\w.:$])([A-Za-z_:][A-Za-z0-9_:]*)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "bool",
        "offset",
        "inf",
        "nan",
    }
)


def _without_strings(expr: str) -> str:
    return _STRING.sub('""', expr)


def metric_names(expr: str) -> set[str]:
    """Every metric (or recording-rule) name that ``expr`` selects."""
    text = _RANGE.sub("", _without_strings(expr))
    text = re.sub(r"\{[^}]*\}", "", text)
    text = _GROUPING.sub("", text)
    names: set[str] = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names


def matcher_labels(expr: str) -> dict[str, set[str]]:
    """For each metric selected with a ``{...}`` block, the label names its matchers use."""
    found: dict[str, set[str]] = {}
    for match in _SELECTOR.finditer(_without_strings(expr)):
        name, body = match.group(1), match.group(2)
        if name.lower() in KEYWORDS:
            continue
        found.setdefault(name, set()).update(_MATCHER_LABEL.findall(body))
    return found
