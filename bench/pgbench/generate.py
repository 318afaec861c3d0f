#!/usr/bin/env python3
"""Turns the statement log of one checkout (scripts/bench.sh --capture-sql)
into a pgbench script: every statement the platform executed on a shard for
that payment, in its transactions, in order, with the parameters the
platform bound inlined as literals and the payment's IDs replaced by values
unique per pgbench run, so every script run is a new payment.

    python3 bench/pgbench/generate.py .stack/bench/checkout-sql.log > bench/pgbench/checkout.sql

Kept: transactions on a shard database that mention one of the payment's
IDs, and one outbox relay pass on the payment's shard (the relay's passes
name no payment, and its idle polls run the same statements: they, the
reconciler's and the gauges' periodic reads are not part of a payment). Control-database reads (API keys) are served from Redis after the
first request and are left out.

Each statement is preceded by `-- statement <hash>: <start of its SQL>`,
the hash of its exact SQL text: scripts/bench.sh --capture-sql compares
those lines with the committed script, so a change to the platform's SQL
shows as a diff even though parameter values differ from run to run.
"""

import hashlib
import re
import sys

PREFIX = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)? \w+) \[(?P<pid>\d+)\] "
    r"(?P<user>[^@ ]*)@(?P<db>\S+) (?P<level>[A-Z]+):  (?P<text>.*)$"
)
STATEMENT = re.compile(r"^(?:statement|execute [^:]+): (?P<sql>.*)$", re.S)
PARAM = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')", re.S)
# Our IDs: prefix, underscore, then base-62-ish text (DESIGN.md §4).
OBJECT_ID = re.compile(r"\b(?:pi|pa|ch|re|cus|evt|req|pm|att|txn|je|we|rr)_[0-9A-Za-z]{8,}")
IDEMPOTENCY_KEY = re.compile(r"capture-2-[0-9]+")
# Unix times in seconds or milliseconds: normalized so captures compare.
UNIX_SECONDS = re.compile(r"^'?(1[6-9]\d{8})'?$")


def entries(lines):
    """(pid, db, level, text) per log entry, continuation lines joined."""
    current = None
    for line in lines:
        match = PREFIX.match(line.rstrip("\n"))
        if match:
            if current:
                yield current
            current = [match["pid"], match["db"], match["level"], match["text"]]
        elif current is not None:
            current[3] += "\n" + line.rstrip("\n").removeprefix("\t")
    if current:
        yield current


def pgbench_safe(literal):
    """pgbench reads `:name` anywhere in a statement as a variable, quotes
    or not: colons inside a literal become `\x3a` in an E'' string."""
    if not re.search(r":[A-Za-z0-9_]", literal):
        return literal
    inner = literal[1:-1].replace("\\", "\\\\").replace(":", "\\x3a")
    return "E'" + inner + "'"


def with_unique_ids(literal, ids):
    """The payment's IDs in a literal become `' || :n || '` splices, so each
    script run writes a new payment; the literal keeps its type."""
    def one(match):
        found = match.group(0)
        if found not in ids:
            ids[found] = len(ids) + 1
        return f"{found[: found.index('_') + 1]}bench_' || :n || '_{ids[found]}"
    replaced = IDEMPOTENCY_KEY.sub("bench_' || :n || '_key", OBJECT_ID.sub(one, literal))
    if replaced == literal:
        return pgbench_safe(literal)
    parts = replaced[1:-1].split("' || :n || '")
    expression = " || :n || ".join(pgbench_safe("'" + part + "'") for part in parts)
    if literal.startswith("'{\"{"):
        return f"({expression})::jsonb[]"
    if literal.startswith(("'{\"", "'[")):
        return f"({expression})::jsonb"
    if literal.startswith("'{"):
        return f"({expression})::text[]"
    return f"({expression})"


def inline(sql, detail, ids):
    values = {}
    if detail:
        for number, value in PARAM.findall(detail.removeprefix("parameters: ")):
            values[number] = value
    def literal(match):
        value = values.get(match.group(1))
        if value is None:
            return match.group(0)
        if UNIX_SECONDS.match(value):
            return "1800000000" if not value.startswith("'") else "'1800000000'"
        if value == "NULL":
            return value
        return with_unique_ids(value, ids)
    return re.sub(r"\$(\d+)\b", literal, sql)


def relay_rows(body):
    """The relay takes (deletes) up to a batch of rows per pass; each script
    run stands for one payment, so it takes that payment's one command
    row."""
    return re.sub(r"limit '\d+'\s+for update skip locked", "limit 1 for update skip locked", body)


def main(path):
    with open(path, encoding="utf-8", errors="replace") as log:
        items = list(entries(log))
    # Statements with their parameters, per backend, in log order.
    statements = []
    for index, (pid, db, level, text) in enumerate(items):
        if level != "LOG":
            continue
        match = STATEMENT.match(text)
        if not match:
            continue
        detail = None
        following = items[index + 1] if index + 1 < len(items) else None
        if following and following[0] == pid and following[2] == "DETAIL":
            detail = following[3]
        statements.append((pid, db, match["sql"].strip(), detail))

    # Group into transactions per backend.
    transactions = []
    open_tx = {}
    for pid, db, sql, detail in statements:
        verb = sql.split(None, 1)[0].lower() if sql else ""
        if verb in ("begin", "start"):
            open_tx[pid] = {"db": db, "statements": []}
            transactions.append(open_tx[pid])
        elif verb in ("commit", "rollback", "end"):
            tx = open_tx.pop(pid, None)
            if tx is not None:
                tx["end"] = verb
        else:
            tx = open_tx.get(pid)
            if tx is None:
                transactions.append({"db": db, "statements": [(sql, detail)], "end": None})
            else:
                tx["statements"].append((sql, detail))

    ids = {}

    def mentions_payment(tx):
        return any(OBJECT_ID.search((detail or "") + sql) for sql, detail in tx["statements"])

    def relay_pass(tx):
        return any("delete from outbox" in sql for sql, _ in tx["statements"])

    out = [
        "-- One checkout's SQL on its shard, as the platform executes it.",
        "-- Generated by bench/pgbench/generate.py from scripts/bench.sh --capture-sql;",
        "-- do not edit by hand (bench/pgbench/README.md).",
        "\\set n random(1, 9000000000000000000)",
    ]
    payment_db = None
    relay_kept = False
    for tx in transactions:
        if "_control" in tx["db"] or not tx["statements"]:
            continue
        # A relay pass names no payment, and empty passes (its idle polls)
        # run the same statement: keep one, the first on the payment's
        # shard after the payment's command was written.
        if mentions_payment(tx):
            payment_db = tx["db"]
        elif relay_pass(tx) and not relay_kept and tx["db"] == payment_db:
            relay_kept = True
        else:
            continue
        out.append("")
        if tx.get("end") is not None:
            out.append("BEGIN;")
        for sql, detail in tx["statements"]:
            digest = hashlib.sha256(sql.encode()).hexdigest()[:12]
            head = " ".join(sql.split())[:70]
            out.append(f"-- statement {digest}: {head}")
            body = inline(sql, detail, ids)
            body = relay_rows(body)
            # pgbench reads one statement per line unless it ends in ';'
            # on a later line; collapse to one line to be safe.
            out.append(" ".join(body.split()) + ";")
        if tx.get("end") is not None:
            out.append(f"{tx['end'].upper()};")
    print("\n".join(out))


if __name__ == "__main__":
    main(sys.argv[1])
