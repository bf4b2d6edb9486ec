"""The Grafana dashboard's queries, and which metric names and labels each one reads.

`dashboard_queries()` lists every PromQL expression of deploy/grafana/dashboards/gateway.json
(panel targets, rows' nested panels, template-variable queries). `metric_names_and_labels(expr)`
names each metric an expression selects together with the labels it relies on: those in its
`{...}` matchers and those an enclosing aggregation groups by (`by`/`without`) or a binary
operation matches on (`on`/`ignoring`/`group_left`/`group_right`). A test can then check each
pair against what a running gateway exposes on /metrics, so that a renamed metric or label shows
up as a failing test instead of an empty panel.

The scanner knows enough PromQL for dashboards (selectors, functions, aggregations, range and
subquery brackets, offsets, Grafana's `$variables` and `label_values(metric, label)`); it is not
a full parser and raises ValueError on brackets that do not balance.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

REPO_ROOT = Path(__file__).resolve().parents[2]
DASHBOARD_PATH = REPO_ROOT / "deploy" / "grafana" / "dashboards" / "gateway.json"

# Prometheus attaches these to every scraped series; the gateway itself never exposes them.
TARGET_LABELS = frozenset({"job", "instance"})

AGGREGATIONS = frozenset({"sum", "avg", "min", "max", "count", "group", "stddev", "stdvar", "topk",
                          "bottomk", "quantile", "count_values", "limitk", "limit_ratio"})
GROUPING = frozenset({"by", "without"})
MATCHING = frozenset({"on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$[A-Za-z_][A-Za-z0-9_]*)
  | (?P<number>0x[0-9a-fA-F]+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?[a-zA-Z]*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<matchop>=~|!~|!=)
  | (?P<punct>[(){}\[\],@])
  | (?P<op>==|<=|>=|[-+*/%^<>=])
""", re.VERBOSE)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str


@dataclass
class _Selector:
    name: str
    labels: set[str] = field(default_factory=set)


@dataclass
class _Frame:
    """One pair of parentheses: the selectors inside it and what is still to apply to them."""
    selectors: list[_Selector] = field(default_factory=list)
    grouping: set[str] = field(default_factory=set)  # from `sum by (x) (` before this frame
    label_values_call: bool = False


def dashboard_queries(path: Path = DASHBOARD_PATH) -> list[str]:
    """Every PromQL expression in the dashboard: panel targets, then template-variable queries."""
    dashboard = json.loads(path.read_text())
    queries = [target["expr"] for panel in _all_panels(dashboard.get("panels", []))
               for target in panel.get("targets", []) if target.get("expr")]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        text = query.get("query") if isinstance(query, dict) else query
        if text:
            queries.append(text)
    return queries


def metric_names_and_labels(expr: str) -> set[tuple[str, frozenset[str]]]:
    """Each metric the expression selects, with the labels it needs that metric to carry."""
    tokens = list(_tokenize(expr))
    root = _Frame()
    stack = [root]
    pending_grouping: set[str] | None = None  # labels of `sum by (...)`, waiting for its `(`
    pending_label_values = False
    last_closed: _Frame | None = None  # for `sum (...) by (labels)`
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        nxt = tokens[i + 1] if i + 1 < len(tokens) else None
        if tok.kind == "ident" and tok.text in GROUPING and nxt is not None and nxt.text == "(":
            labels, i = _label_list(tokens, i + 1)
            if last_closed is not None and pending_grouping is None:
                _apply(last_closed.selectors, labels)  # `sum (...) by (labels)`
                last_closed = None
            else:
                pending_grouping = labels
            continue
        if tok.kind == "ident" and tok.text in MATCHING:
            if nxt is not None and nxt.text == "(":
                labels, i = _label_list(tokens, i + 1)
                stack[-1].grouping |= labels
            else:
                i += 1
            continue
        last_closed = None
        if tok.text == "(":
            frame = _Frame(grouping=pending_grouping or set(), label_values_call=pending_label_values)
            stack.append(frame)
            pending_grouping, pending_label_values = None, False
            i += 1
        elif tok.text == ")":
            if len(stack) == 1:
                raise ValueError(f"unbalanced ')' in {expr!r}")
            frame = stack.pop()
            _apply(frame.selectors, frame.grouping)
            stack[-1].selectors.extend(frame.selectors)
            last_closed = frame
            i += 1
        elif tok.text == "[":
            i = _skip_brackets(tokens, i, expr)
        elif tok.text == "{":
            matchers, i = _matchers(tokens, i, expr)
            name = matchers.pop("__name__", None)
            if name is None:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            stack[-1].selectors.append(_Selector(name, set(matchers)))
        elif tok.kind == "ident" and nxt is not None and nxt.text == "(":
            if tok.text in AGGREGATIONS and pending_grouping is None:
                pending_grouping = set()
            pending_label_values = tok.text == "label_values"
            i += 1
        elif tok.kind == "ident" and tok.text in AGGREGATIONS and nxt is not None and nxt.text in GROUPING:
            i += 1  # `sum by (...) (...)`: the grouping comes next
        elif tok.kind == "ident" and tok.text == "offset":
            i += 2  # `offset 5m`: the duration is no metric
        elif tok.kind == "ident" and tok.text not in KEYWORDS:
            if stack[-1].label_values_call and stack[-1].selectors and _follows_comma(tokens, i):
                stack[-1].selectors[-1].labels.add(tok.text)  # label_values(metric, label)
                i += 1
                continue
            selector = _Selector(tok.text)
            if nxt is not None and nxt.text == "{":
                matchers, i = _matchers(tokens, i + 1, expr)
                selector.labels |= set(matchers)
            else:
                i += 1
            stack[-1].selectors.append(selector)
        else:
            i += 1
    if len(stack) != 1:
        raise ValueError(f"unbalanced '(' in {expr!r}")
    _apply(root.selectors, root.grouping)
    return {(s.name, frozenset(s.labels - TARGET_LABELS)) for s in root.selectors}


def _all_panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _all_panels(panel.get("panels", []))  # a collapsed row keeps its panels inside


def _tokenize(expr: str) -> Iterator[_Token]:
    pos = 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if m is None:
            raise ValueError(f"unexpected {expr[pos]!r} at {pos} in {expr!r}")
        pos = m.end()
        if m.lastgroup != "space":
            yield _Token(m.lastgroup or "", m.group())


def _apply(selectors: list[_Selector], labels: set[str]) -> None:
    for selector in selectors:
        selector.labels |= labels


def _follows_comma(tokens: list[_Token], i: int) -> bool:
    return i > 0 and tokens[i - 1].text == ","


def _label_list(tokens: list[_Token], i: int) -> tuple[set[str], int]:
    """Labels of `(a, b)` starting at the `(` at i; returns them and the index after `)`."""
    labels: set[str] = set()
    i += 1
    while i < len(tokens) and tokens[i].text != ")":
        if tokens[i].kind in ("ident", "string"):
            labels.add(tokens[i].text.strip("\"'`"))
        i += 1
    if i == len(tokens):
        raise ValueError("unbalanced label list")
    return labels, i + 1


def _matchers(tokens: list[_Token], i: int, expr: str) -> tuple[dict[str, str], int]:
    """`{label op "value", ...}` starting at the `{` at i: label → value, and the index after `}`."""
    found: dict[str, str] = {}
    i += 1
    while i < len(tokens) and tokens[i].text != "}":
        tok = tokens[i]
        if tok.kind in ("ident", "string") and i + 2 < len(tokens) and tokens[i + 1].text in ("=", "!=", "=~", "!~"):
            found[tok.text.strip("\"'`")] = tokens[i + 2].text.strip("\"'`")
            i += 3
        elif tok.kind == "string":
            found["__name__"] = tok.text.strip("\"'`")  # `{"metric.name", ...}` (Prometheus 3)
            i += 1
        else:
            i += 1
    if i == len(tokens):
        raise ValueError(f"unbalanced '{{' in {expr!r}")
    return found, i + 1


def _skip_brackets(tokens: list[_Token], i: int, expr: str) -> int:
    """A range `[5m]` or subquery `[1h:5m]`: durations and variables, never a metric."""
    while i < len(tokens) and tokens[i].text != "]":
        i += 1
    if i == len(tokens):
        raise ValueError(f"unbalanced '[' in {expr!r}")
    return i + 1
