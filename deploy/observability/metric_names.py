#!/usr/bin/env python3
"""Lists every metric the alert rules and the Grafana dashboards read.

    python3 deploy/observability/metric_names.py              # the names, sorted, one a line
    python3 deploy/observability/metric_names.py --contract   # also fail unless docs/metrics.md names each
    python3 deploy/observability/metric_names.py --self-test  # this script's own tests
    python3 deploy/observability/metric_names.py --rule-counts          # "<file> <rules>" per rules file
    python3 deploy/observability/metric_names.py --dashboard-rules OUT  # dashboard queries as a rules file

Reads rules/*.yml and grafana/*.json next to this file (or the files given
after the options). A histogram's `_bucket`, `_sum` and `_count` series are
reported under the histogram's own name, as a service exports it. Left out:
the recording rules the rules files define (the names with a colon; one that
is read but not defined is an error) and the series Prometheus makes itself
(`up`, `scrape_*`, `ALERTS`). The project's tests compare the list with what
the services export.

--rule-counts lets deploy/observability/check.sh compare the number of rules
this script reads with the number promtool reads, which proves the small
YAML reader below misses none. --dashboard-rules writes every dashboard query
as a recording rule (Grafana's variables replaced), so `promtool check rules`
parses them all.

Python 3.11 standard library only (the rules are YAML, which it cannot read:
the reader here handles the subset the rules files use, and says so when it
meets something else).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
CONTRACT = HERE.parent.parent / "docs" / "metrics.md"

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
BUILTINS = {
    "up", "scrape_duration_seconds", "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling", "scrape_series_added",
    "ALERTS", "ALERTS_FOR_STATE",
}
AGGREGATIONS = {
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count",
    "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio",
}
# Keywords whose parenthesised list holds label names, not series.
LABEL_LISTS = {"by", "without", "on", "ignoring", "group_left", "group_right"}
KEYWORDS = {"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"}


class Error(Exception):
    pass


# ------------------------------------------------------------------ PromQL

TOKEN = re.compile(
    r"""
    (?P<space>\s+|\#[^\n]*)
  | (?P<string>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`)
  | (?P<variable>\$\{[^}]*\}|\$\w+)
  | (?P<number>0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])?(?:\d+(?:ms|[smhdwy]))*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<op>=~|!~|!=|==|<=|>=|[-+*/%^<>=(){}\[\],@])
    """,
    re.VERBOSE,
)


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        match = TOKEN.match(expr, pos)
        if not match:
            raise Error(f"cannot read PromQL at {expr[pos:pos + 30]!r} in {expr!r}")
        kind = match.lastgroup or ""
        if kind != "space":
            out.append((kind, match.group()))
        pos = match.end()
    return out


def closing(toks: list[tuple[str, str]], start: int, open_: str, close: str) -> int:
    """The index of the bracket closing the one at `start`."""
    depth = 0
    for index in range(start, len(toks)):
        if toks[index] == ("op", open_):
            depth += 1
        elif toks[index] == ("op", close):
            depth -= 1
            if depth == 0:
                return index
    raise Error(f"unbalanced {open_}{close}")


def unquote(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    return json.loads('"' + literal[1:-1].replace('\\\'', "'") + '"')


def series_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads, as written."""
    toks, names, i = tokens(expr), set(), 0
    while i < len(toks):
        kind, text = toks[i]
        following = toks[i + 1] if i + 1 < len(toks) else ("", "")
        if kind == "op" and text == "{":
            end = closing(toks, i, "{", "}")
            inside = toks[i + 1:end]
            for j in range(len(inside) - 2):
                if inside[j] == ("ident", "__name__"):
                    if inside[j + 1] != ("op", "=") or inside[j + 2][0] != "string":
                        raise Error(f"only __name__=\"...\" is understood: {expr!r}")
                    names.add(unquote(inside[j + 2][1]))
            i = end + 1
        elif kind == "op" and text == "[":
            i = closing(toks, i, "[", "]") + 1
        elif kind == "ident" and text in LABEL_LISTS:
            i = closing(toks, i + 1, "(", ")") + 1 if following == ("op", "(") else i + 1
        elif kind == "ident" and text == "offset":
            i += 2
        elif kind == "ident" and (following == ("op", "(") or text in AGGREGATIONS
                                  or text.lower() in KEYWORDS):
            i += 1
        elif kind == "ident":
            names.add(text)
            i += 1
        else:
            i += 1
    return names


def grafana_query(query: str) -> str:
    """The PromQL inside a Grafana templating query ('' when it has none)."""
    match = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", query, re.S)
    if match:
        return match.group(1)
    match = re.fullmatch(r"\s*query_result\((.*)\)\s*", query, re.S)
    if match:
        return match.group(1)
    if re.fullmatch(r"\s*(label_values\(\s*\w+\s*\)|label_names\(.*\)|metrics\(.*\))\s*", query, re.S):
        return ""
    return query


def dashboard_exprs(document: object) -> list[str]:
    """Every PromQL query of a Grafana dashboard: panel targets (rows and
    nested panels included) and templating queries."""
    exprs: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str) and node["expr"].strip():
                exprs.append(node["expr"])
            for key, value in node.items():
                if key != "templating":
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(document)
    if isinstance(document, dict):
        for variable in document.get("templating", {}).get("list", []):
            if variable.get("type") != "query":
                continue
            query = variable.get("query")
            if isinstance(query, dict):
                query = query.get("query", "")
            if isinstance(query, str) and grafana_query(query).strip():
                exprs.append(grafana_query(query))
    return exprs


GRAFANA_RANGES = re.compile(r"\$(?:__rate_interval|__interval|__range)\b|\$\{(?:__rate_interval|__interval|__range)\}")


def without_grafana_variables(expr: str) -> str:
    """An expression Prometheus parses: ranges become 5m, other variables
    (only ever inside label values) a regex matching anything."""
    return re.sub(r"\$\{?\w+\}?", ".*", GRAFANA_RANGES.sub("5m", expr))


# -------------------------------------------------------------------- YAML

@dataclass
class Rule:
    kind: str  # "record" or "alert"
    name: str
    expr: str


KEY = re.compile(r"^(?P<indent>\s*)(?:- )?(?P<key>record|alert|expr):(?:\s+(?P<value>.*))?$")


def scalar(lines: list[str], index: int, indent: int, value: str) -> str:
    """A YAML scalar starting on lines[index]: plain (possibly continued on
    deeper-indented lines), single- or double-quoted, or a block (| or >)."""
    value = value.strip()
    deeper = []
    for line in lines[index + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        deeper.append(line)
    if value[:1] in "|>":
        if not re.fullmatch(r"[|>][-+]?", value):
            raise Error(f"line {index + 1}: unsupported block scalar header {value!r}")
        return "\n".join(line.strip() for line in deeper).strip()
    if value.startswith('"'):
        if not value.endswith('"') or len(value) < 2:
            raise Error(f"line {index + 1}: a double-quoted value must end on its line")
        return json.loads(value)
    if value.startswith("'"):
        if not value.endswith("'") or len(value) < 2:
            raise Error(f"line {index + 1}: a single-quoted value must end on its line")
        return value[1:-1].replace("''", "'")
    value = re.sub(r"\s+#.*$", "", value)
    continued = [re.sub(r"\s+#.*$", "", line.strip()) for line in deeper
                 if line.strip() and not line.strip().startswith("#")]
    return " ".join([value, *continued]).strip()


def read_rules(text: str) -> list[Rule]:
    lines = text.splitlines()
    rules: list[Rule] = []
    pending: tuple[str, str] | None = None
    for index, line in enumerate(lines):
        match = KEY.match(line)
        if not match:
            continue
        key, indent = match.group("key"), len(match.group("indent"))
        value = scalar(lines, index, indent + (2 if line.lstrip().startswith("- ") else 0),
                       match.group("value") or "")
        if key in ("record", "alert"):
            if pending:
                raise Error(f"line {index + 1}: {pending[0]} {pending[1]} has no expr")
            pending = (key, value)
        else:
            if not pending:
                raise Error(f"line {index + 1}: expr outside a rule")
            rules.append(Rule(pending[0], pending[1], value))
            pending = None
    if pending:
        raise Error(f"{pending[0]} {pending[1]} has no expr")
    return rules


# ------------------------------------------------------------------- names

def base_name(name: str) -> str:
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def inputs(paths: list[Path]) -> tuple[list[tuple[Path, list[Rule]]], list[tuple[Path, list[str]]]]:
    rule_files, dashboards = [], []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        try:
            if path.suffix == ".json":
                dashboards.append((path, dashboard_exprs(json.loads(text))))
            else:
                rule_files.append((path, read_rules(text)))
        except (Error, ValueError) as error:
            raise Error(f"{path}: {error}") from None
    return rule_files, dashboards


def metric_names(paths: list[Path]) -> list[str]:
    rule_files, dashboards = inputs(paths)
    recorded = {rule.name for _, rules in rule_files for rule in rules if rule.kind == "record"}
    exprs = [(path, rule.expr) for path, rules in rule_files for rule in rules]
    exprs += [(path, expr) for path, queries in dashboards for expr in queries]
    names = set()
    for path, expr in exprs:
        try:
            found = series_names(expr)
        except Error as error:
            raise Error(f"{path}: {error}") from None
        for name in found:
            if name in recorded or name in BUILTINS:
                continue
            if ":" in name:
                raise Error(f"{path}: reads {name}, which no rules file records")
            names.add(base_name(name))
    return sorted(names)


def contract_names(text: str) -> set[str]:
    """The metric names in docs/metrics.md's tables (first column)."""
    return set(re.findall(r"^\|\s*`([a-z_:][a-z0-9_:]*)`\s*\|", text, re.M))


def default_paths() -> list[Path]:
    return sorted((HERE / "rules").glob("*.yml")) + sorted((HERE / "grafana").glob("*.json"))


# --------------------------------------------------------------- self-test

def self_test() -> None:
    import unittest

    class PromQL(unittest.TestCase):
        def test_selectors_functions_and_label_lists(self):
            self.assertEqual(
                series_names('sum by (job, le) (rate(a_total{job="x", route!~"/v1/{id}|y"}[5m])) / ignoring (state) group_left (pool) b'),
                {"a_total", "b"})

        def test_aggregation_clause_after_the_body_and_keywords(self):
            self.assertEqual(
                series_names("max(a) without (instance) > bool 2 and on() b or c unless d offset 1h"),
                {"a", "b", "c", "d"})

        def test_strings_numbers_durations_and_comments(self):
            self.assertEqual(
                series_names('label_replace(x, "dst", "{y}", "src", "(.*)") > 1e-3 * 14.4 + Inf # z\n - 0x1F'),
                {"x"})
            self.assertEqual(series_names("rate(a[1h30m:1m]) @ start()"), {"a"})

        def test_name_matcher_and_recording_rule_names(self):
            self.assertEqual(series_names('{__name__="a", job="j"} + job:b:ratio_rate5m'), {"a", "job:b:ratio_rate5m"})
            with self.assertRaises(Error):
                series_names('{__name__=~"a.*"}')

        def test_grafana_variables(self):
            expr = 'sum(rate(a{job=~"$job", i="${instance}"}[$__rate_interval]))'
            self.assertEqual(series_names(expr), {"a"})
            self.assertEqual(without_grafana_variables(expr), 'sum(rate(a{job=~".*", i=".*"}[5m]))')

        def test_dashboard_queries(self):
            document = {
                "panels": [{"type": "row", "panels": [{"targets": [{"expr": "a"}]}]},
                           {"targets": [{"expr": "b"}, {"expr": ""}]}],
                "templating": {"list": [
                    {"type": "query", "query": {"query": "label_values(c{x=\"1\"}, job)"}},
                    {"type": "query", "query": "label_values(job)"},
                    {"type": "datasource", "query": "prometheus"},
                ]},
            }
            self.assertEqual(dashboard_exprs(document), ["a", "b", 'c{x="1"}'])

        def test_histogram_series_report_the_histogram(self):
            self.assertEqual(base_name("a_seconds_bucket"), "a_seconds")
            self.assertEqual(base_name("a_seconds_count"), "a_seconds")
            self.assertEqual(base_name("a_total"), "a_total")

    class Yaml(unittest.TestCase):
        def test_every_scalar_form(self):
            text = (
                "groups:\n"
                "  - name: g\n"
                "    rules:\n"
                "      - record: r:a:rate5m\n"
                "        expr: sum(rate(a[5m]))  # plain\n"
                "      - alert: Block\n"
                "        expr: |\n"
                "          r:a:rate5m\n"
                "            > 1\n"
                "        for: 5m\n"
                "      - alert: Folded\n"
                "        expr: >-\n"
                "          b\n"
                "          > 2\n"
                "        labels:\n"
                "          severity: page\n"
                "      - alert: Quoted\n"
                "        expr: \"c{x=\\\"1\\\"} > 0\"\n"
                "      - record: r:d\n"
                "        expr: 'd{y=''2''}'\n"
                "      - alert: Continued\n"
                "        expr: e\n"
                "          > 3\n"
                "        annotations:\n"
                "          summary: s\n"
            )
            rules = read_rules(text)
            self.assertEqual([(r.kind, r.name, r.expr) for r in rules], [
                ("record", "r:a:rate5m", "sum(rate(a[5m]))"),
                ("alert", "Block", "r:a:rate5m\n> 1"),
                ("alert", "Folded", "b\n> 2"),
                ("alert", "Quoted", 'c{x="1"} > 0'),
                ("record", "r:d", "d{y='2'}"),
                ("alert", "Continued", "e > 3"),
            ])

        def test_unknown_shapes_fail_loudly(self):
            with self.assertRaises(Error):
                read_rules("- alert: A\n  labels: {}\n")
            with self.assertRaises(Error):
                read_rules('- alert: A\n  expr: "a\n    b"\n')

    class Files(unittest.TestCase):
        def test_the_committed_files(self):
            names = metric_names(default_paths())
            self.assertIn("snakepay_http_request_duration_seconds", names)
            self.assertNotIn("snakepay_http_request_duration_seconds_bucket", names)
            self.assertNotIn("up", names)
            self.assertFalse([n for n in names if ":" in n])
            self.assertEqual(names, sorted(set(names)))

        def test_a_recording_rule_nobody_defines_is_an_error(self):
            import tempfile
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "r.yml"
                path.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: job:x:rate5m > 1\n")
                with self.assertRaises(Error):
                    metric_names([path])

    suite = unittest.TestSuite()
    for case in (PromQL, Yaml, Files):
        suite.addTests(unittest.defaultTestLoader.loadTestsFromTestCase(case))
    result = unittest.TextTestRunner(verbosity=1).run(suite)
    if not result.wasSuccessful():
        sys.exit(1)


# -------------------------------------------------------------------- main

def main(argv: list[str]) -> int:
    args = argv[1:]
    if args == ["--self-test"]:
        self_test()
        return 0
    mode = args.pop(0) if args and args[0].startswith("--") else ""
    out = Path(args.pop(0)) if mode == "--dashboard-rules" and args else None
    if mode not in ("", "--contract", "--rule-counts", "--dashboard-rules") or (mode == "--dashboard-rules" and not out):
        print(__doc__, file=sys.stderr)
        return 2
    paths = [Path(arg) for arg in args] or default_paths()
    try:
        if mode == "--rule-counts":
            rule_files, _ = inputs(paths)
            for path, rules in rule_files:
                print(path.name, len(rules))
            return 0
        if mode == "--dashboard-rules":
            _, dashboards = inputs(paths)
            lines = ["groups:"]
            for path, exprs in dashboards:
                lines += [f"  - name: {path.stem}", "    rules:"]
                for index, expr in enumerate(exprs):
                    lines += [f"      - record: dashboard:{path.stem}:query{index}",
                              f"        expr: {json.dumps(without_grafana_variables(expr))}"]
            assert out is not None
            out.write_text("\n".join(lines) + "\n", encoding="utf-8")
            return 0
        names = metric_names(paths)
    except Error as error:
        print(f"metric_names.py: {error}", file=sys.stderr)
        return 1
    if mode == "--contract":
        missing = sorted(set(names) - contract_names(CONTRACT.read_text(encoding="utf-8")))
        if missing:
            print(f"metric_names.py: not in {CONTRACT.relative_to(HERE.parent.parent)}: {' '.join(missing)}", file=sys.stderr)
            return 1
    print("\n".join(names))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
