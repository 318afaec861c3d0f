#!/usr/bin/env python3
"""Writes the Grafana dashboard payments.json (next to this file).

The dashboard is generated rather than edited by hand so that its layout,
datasource references and panel ids stay consistent; payments.json is
committed, and `payments.py --check` (run by deploy/observability/check.sh)
fails when it differs from what this script writes.

    python3 deploy/observability/grafana/payments.py          # rewrite payments.json
    python3 deploy/observability/grafana/payments.py --check  # verify it is current

Every metric comes from docs/metrics.md; the SLO panels read the recording
rules of deploy/observability/rules/slo.yml. Python 3.11 standard library only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).with_name("payments.json")
DS = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
API = 'job="snakepay-external-api"'
SERVICES = 'job=~"snakepay-.*"'


def q(expr: str, legend: str = "") -> dict:
    return {"expr": expr, "legend": legend}


def quantiles(metric: str, selector: str = "", by: str = "") -> list[dict]:
    """p50, p90 and p99 of a histogram, optionally per label."""
    group = f"le, {by}" if by else "le"
    prefix = f"{{{{{by}}}}} " if by else ""
    return [
        q(
            f"histogram_quantile({p}, sum by ({group}) "
            f"(rate({metric}_bucket{{{selector}}}[{RATE}])))",
            f"{prefix}p{round(p * 100)}",
        )
        for p in (0.5, 0.9, 0.99)
    ]


def ratio(metric: str, part: str, whole: str, by: str = "") -> str:
    """The share of `metric`'s rate matching `part` among that matching `whole`."""
    group = f"sum by ({by}) " if by else "sum "
    whole = f"{{{whole}}}" if whole else ""
    return (
        f"{group}(rate({metric}{{{part}}}[{RATE}]))\n/\n"
        f"{group}(rate({metric}{whole}[{RATE}]))"
    )


def panel(kind: str, title: str, queries: list[dict], unit: str = "short",
          width: int = 8, height: int = 8, description: str = "", **extra) -> dict:
    return {
        "kind": kind, "title": title, "queries": queries, "unit": unit,
        "width": width, "height": height, "description": description, **extra,
    }


def ts(title, queries, unit="short", **kw):
    return panel("timeseries", title, queries, unit, **kw)


def stat(title, queries, unit="short", **kw):
    return panel("stat", title, queries, unit, width=4, height=4, **kw)


BREAKER_STATES = [
    {"type": "value", "options": {
        "0": {"text": "closed", "color": "green", "index": 0},
        "1": {"text": "half-open", "color": "yellow", "index": 1},
        "2": {"text": "open", "color": "red", "index": 2},
    }},
]
UP_STATES = [
    {"type": "value", "options": {
        "0": {"text": "down", "color": "red", "index": 0},
        "1": {"text": "up", "color": "green", "index": 1},
    }},
]

ROWS: list[tuple[str, list[dict]]] = [
    ("Overview", [
        stat("External API requests/s", [q(f"sum(rate(snakepay_http_requests_total{{{API}}}[{RATE}]))")], "reqps"),
        stat("Availability, last hour (objective 99.9%)",
             [q("1 - job:snakepay_http_requests_5xx:ratio_rate1h")], "percentunit", decimals=3,
             thresholds=[("red", None), ("yellow", 0.999), ("green", 0.9995)]),
        stat("Under 0.25 s, last hour (objective 99%)",
             [q("1 - job:snakepay_http_requests_slow:ratio_rate1h")], "percentunit", decimals=2,
             thresholds=[("red", None), ("yellow", 0.99), ("green", 0.995)]),
        stat("Authorizations succeeded",
             [q(ratio("snakepay_payment_operations_total", 'operation="authorize", outcome="succeeded"', 'operation="authorize"'))],
             "percentunit"),
        stat("Oldest payment in processing",
             [q("max(snakepay_payments_oldest_processing_age_seconds)")], "s",
             thresholds=[("green", None), ("yellow", 120), ("red", 900)]),
        stat("Dead letters", [q("sum(max by (queue) (snakepay_dead_letter_messages))")],
             thresholds=[("green", None), ("red", 1)]),
    ]),
    ("Traffic", [
        ts("Requests/s by service", [q(f"sum by (job) (rate(snakepay_http_requests_total{{{SERVICES}}}[{RATE}]))", "{{job}}")], "reqps"),
        ts("External API requests/s by status", [q(f"sum by (status) (rate(snakepay_http_requests_total{{{API}}}[{RATE}]))", "{{status}}")], "reqps"),
        ts("5xx ratio by service", [q(ratio("snakepay_http_requests_total", f'{SERVICES}, status=~"5.."', SERVICES, "job"), "{{job}}")], "percentunit"),
        ts("External API requests/s by route", [q(f"sum by (method, route) (rate(snakepay_http_requests_total{{{API}}}[{RATE}]))", "{{method}} {{route}}")], "reqps", width=12),
        ts("Availability budget burn rate (page at 14.4 over 1h, 6 over 6h)", [
            q("job:snakepay_http_requests_5xx:ratio_rate5m / 0.001", "5m"),
            q("job:snakepay_http_requests_5xx:ratio_rate1h / 0.001", "1h"),
            q("job:snakepay_http_requests_5xx:ratio_rate6h / 0.001", "6h"),
            q("job:snakepay_http_requests_5xx:ratio_rate3d / 0.001", "3d"),
        ], width=12, description="How many times faster than the 99.9% objective allows the error budget is spent (1 = exactly on budget)."),
    ]),
    ("Payments", [
        ts("Payment operations/s by operation and outcome", [q(f"sum by (operation, outcome) (rate(snakepay_payment_operations_total[{RATE}]))", "{{operation}} {{outcome}}")], "ops"),
        ts("Authorization success and decline rates", [
            q(ratio("snakepay_payment_operations_total", 'operation="authorize", outcome="succeeded"', 'operation="authorize"'), "succeeded"),
            q(ratio("snakepay_payment_operations_total", 'operation="authorize", outcome="declined"', 'operation="authorize"'), "declined"),
            q(ratio("snakepay_payment_operations_total", 'operation="authorize", outcome="requires_action"', 'operation="authorize"'), "requires action (3-D Secure)"),
            q(ratio("snakepay_payment_operations_total", 'operation="authorize", outcome="unknown"', 'operation="authorize"'), "unknown"),
        ], "percentunit"),
        ts("Declines/s by decline code", [q(f"sum by (decline_code) (rate(snakepay_payment_operations_total{{outcome=\"declined\"}}[{RATE}]))", "{{decline_code}}")], "ops"),
        ts("Payments in flight", [q("max by (status) (snakepay_payments_in_flight)", "{{status}}")]),
        ts("Oldest payment in processing", [q("max(snakepay_payments_oldest_processing_age_seconds)", "age")], "s",
           description="The reconciler inquires after 60 s; the alert fires past 15 minutes."),
        ts("Ledger trial balance (must be 0)", [q("max by (currency) (snakepay_ledger_trial_balance_minor_units)", "{{currency}}")]),
    ]),
    ("Latency", [
        ts("External API latency", quantiles("snakepay_http_request_duration_seconds", API), "s"),
        ts("External API p99 by route", [q(
            f"histogram_quantile(0.99, sum by (le, method, route) (rate(snakepay_http_request_duration_seconds_bucket{{{API}}}[{RATE}])))",
            "{{method}} {{route}}")], "s"),
        ts("p99 by service", [q(
            f"histogram_quantile(0.99, sum by (le, job) (rate(snakepay_http_request_duration_seconds_bucket{{{SERVICES}}}[{RATE}])))",
            "{{job}}")], "s"),
        ts("Latency budget burn rate (page at 14.4 over 1h, 6 over 6h)", [
            q("job:snakepay_http_requests_slow:ratio_rate5m / 0.01", "5m"),
            q("job:snakepay_http_requests_slow:ratio_rate1h / 0.01", "1h"),
            q("job:snakepay_http_requests_slow:ratio_rate6h / 0.01", "6h"),
            q("job:snakepay_http_requests_slow:ratio_rate3d / 0.01", "3d"),
        ], width=24, description="Requests slower than 0.25 s against the 1% the objective allows; requests that wait for the processor are left out."),
    ]),
    ("Processor", [
        ts("Processor latency", quantiles("snakepay_processor_request_duration_seconds"), "s"),
        ts("Processor p99 by operation", [q(
            f"histogram_quantile(0.99, sum by (le, processor, operation) (rate(snakepay_processor_request_duration_seconds_bucket[{RATE}])))",
            "{{processor}} {{operation}}")], "s"),
        panel("state-timeline", "Circuit breakers", [q("max by (instance, breaker) (snakepay_circuit_breaker_state)", "{{breaker}} {{instance}}")],
              mappings=BREAKER_STATES),
        ts("Outcomes/s by processor and outcome", [q(f"sum by (processor, outcome) (rate(snakepay_payment_operations_total[{RATE}]))", "{{processor}} {{outcome}}")], "ops", width=12),
        ts("Unknown outcomes/s (left for the reconciler)", [q(f"sum by (operation) (rate(snakepay_payment_operations_total{{outcome=\"unknown\"}}[{RATE}]))", "{{operation}}")], "ops", width=12),
    ]),
    ("Queue and outbox", [
        ts("Outbox backlog by shard", [q("max by (shard) (snakepay_outbox_backlog_messages)", "shard {{shard}}")]),
        ts("Outbox oldest entry by shard", [q("max by (shard) (snakepay_outbox_oldest_age_seconds)", "shard {{shard}}")], "s"),
        ts("Outbox published/s", [q(f"sum(rate(snakepay_outbox_published_total[{RATE}]))", "published")], "ops"),
        ts("Consumer lag (ready messages) by queue", [q("max by (queue) (snakepay_broker_queue_depth_messages)", "{{queue}}")]),
        ts("Consumed/s by queue and result", [q(f"sum by (queue, result) (rate(snakepay_broker_messages_consumed_total[{RATE}]))", "{{queue}} {{result}}")], "ops"),
        ts("Redeliveries/s by queue", [q(f"sum by (queue) (rate(snakepay_broker_redeliveries_total[{RATE}]))", "{{queue}}")], "ops"),
        ts("Dead letters by queue", [q("max by (queue) (snakepay_dead_letter_messages)", "{{queue}}")]),
        ts("Webhook delivery attempts/s", [q(f"sum by (result) (rate(snakepay_webhook_delivery_attempts_total[{RATE}]))", "{{result}}")], "ops"),
        ts("Webhook deliveries abandoned (last hour)", [q("sum(increase(snakepay_webhook_deliveries_abandoned_total[1h]))", "abandoned")]),
    ]),
    ("Cache and Redis", [
        ts("Cache hit ratio by cache", [q(ratio("snakepay_cache_requests_total", 'result="hit"', "", "cache"), "{{cache}}")], "percentunit"),
        ts("Cache requests/s by result", [q(f"sum by (cache, result) (rate(snakepay_cache_requests_total[{RATE}]))", "{{cache}} {{result}}")], "ops"),
        ts("Redis command latency", quantiles("snakepay_redis_command_duration_seconds"), "s"),
        ts("Requests served without their dependency/s", [q(f"sum by (job, dependency) (rate(snakepay_dependency_degraded_total[{RATE}]))", "{{job}} without {{dependency}}")], "reqps", width=12),
        ts("Rate limit decisions/s", [q(f"sum by (limiter, result) (rate(snakepay_rate_limit_decisions_total[{RATE}]))", "{{limiter}} {{result}}")], "ops", width=12),
    ]),
    ("Resources", [
        panel("state-timeline", "Scrape targets", [q(f"up{{{SERVICES}}}", "{{job}}")], mappings=UP_STATES),
        ts("Memory (resident) by service", [q(f"sum by (job) (process_resident_memory_bytes{{{SERVICES}}})", "{{job}}")], "bytes"),
        ts("CPU by service (cores)", [q(f"sum by (job) (rate(process_cpu_seconds_total{{{SERVICES}}}[{RATE}]))", "{{job}}")]),
        ts("Database connections in use by pool", [
            q('sum by (job, pool) (snakepay_db_pool_connections{state="in_use"})', "{{job}} {{pool}} in use"),
            q("sum by (job, pool) (snakepay_db_pool_max_connections)", "{{job}} {{pool}} max"),
        ], width=12),
        panel("table", "Versions running", [q("count by (job, version) (snakepay_build_info)", "")], width=12, instant=True),
    ]),
]


def fieldconfig(spec: dict) -> dict:
    defaults: dict = {"unit": spec["unit"]}
    if "decimals" in spec:
        defaults["decimals"] = spec["decimals"]
    if "mappings" in spec:
        defaults["mappings"] = spec["mappings"]
    if "thresholds" in spec:
        defaults["thresholds"] = {"mode": "absolute", "steps": [
            {"color": color, "value": value} for color, value in spec["thresholds"]]}
    if spec["kind"] == "timeseries":
        defaults["custom"] = {"lineWidth": 1, "fillOpacity": 10, "showPoints": "never"}
    return {"defaults": defaults, "overrides": []}


def render(spec: dict, panel_id: int, x: int, y: int) -> dict:
    targets = []
    for index, query in enumerate(spec["queries"]):
        target = {"datasource": DS, "expr": query["expr"], "legendFormat": query["legend"] or "__auto",
                  "refId": chr(ord("A") + index)}
        if spec.get("instant"):
            target |= {"instant": True, "range": False, "format": "table"}
        targets.append(target)
    out = {
        "id": panel_id, "type": spec["kind"], "title": spec["title"], "datasource": DS,
        "gridPos": {"h": spec["height"], "w": spec["width"], "x": x, "y": y},
        "fieldConfig": fieldconfig(spec), "targets": targets,
    }
    if spec["description"]:
        out["description"] = spec["description"]
    if spec["kind"] == "timeseries":
        out["options"] = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                          "tooltip": {"mode": "multi", "sort": "desc"}}
    elif spec["kind"] == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                          "colorMode": "value", "graphMode": "area", "textMode": "auto"}
    return out


def dashboard() -> dict:
    panels, panel_id, y = [], 1, 0
    for title, specs in ROWS:
        panels.append({"id": panel_id, "type": "row", "title": title, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        panel_id, y, x, row_height = panel_id + 1, y + 1, 0, 0
        for spec in specs:
            if x + spec["width"] > 24:
                x, y, row_height = 0, y + row_height, 0
            panels.append(render(spec, panel_id, x, y))
            panel_id, x, row_height = panel_id + 1, x + spec["width"], max(row_height, spec["height"])
        y += row_height
    return {
        "uid": "snakepay-payments",
        "title": "Snakepay payments",
        "description": "Traffic, payments, latency, processor, queue and outbox, cache and resources of a Snakepay region (deploy/observability).",
        "tags": ["snakepay"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": [{
            "name": "datasource", "label": "Data source", "type": "datasource",
            "query": "prometheus", "current": {}, "hide": 0, "refresh": 1, "regex": "", "options": [],
        }]},
        "panels": panels,
    }


def main(argv: list[str]) -> int:
    text = json.dumps(dashboard(), indent=2, ensure_ascii=False) + "\n"
    if argv[1:] == ["--check"]:
        if not OUT.exists() or OUT.read_text(encoding="utf-8") != text:
            print(f"{OUT} is not what {Path(__file__).name} writes: run python3 {__file__}", file=sys.stderr)
            return 1
        return 0
    if argv[1:]:
        print(__doc__, file=sys.stderr)
        return 2
    OUT.write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
