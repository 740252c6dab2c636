"""Checks Prometheus alerting rules without promtool: the file's shape,
durations, labels and annotations, balanced PromQL, and that every
lockstep_* metric an expression names is in a real exposition.

usage: check_alert_rules.py RULES.yaml METRICS.txt
"""

import re
import sys

import yaml

DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")


def metric_names(exposition: str) -> set:
    names = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            # A declared family has a name even before its first sample;
            # an OpenMetrics counter family's samples end in _total.
            _, _, family, kind = line.split(" ", 3)
            names.add(family + "_total" if kind.strip() == "counter" else family)
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{ ]", line, maxsplit=1)[0])
    return names


def balanced(expr: str) -> bool:
    depth = {"(": 0, "[": 0, "{": 0}
    pairs = {")": "(", "]": "[", "}": "{"}
    for ch in re.sub(r'"[^"]*"', "", expr):
        if ch in depth:
            depth[ch] += 1
        elif ch in pairs:
            depth[pairs[ch]] -= 1
            if depth[pairs[ch]] < 0:
                return False
    return all(v == 0 for v in depth.values())


def check(rules_path: str, metrics_path: str) -> list:
    with open(rules_path) as f:
        doc = yaml.safe_load(f)
    with open(metrics_path) as f:
        known = metric_names(f.read())
    problems, seen = [], set()
    groups = doc.get("groups") if isinstance(doc, dict) else None
    if not groups:
        return ["no groups"]
    for group in groups:
        if not group.get("name") or not group.get("rules"):
            problems.append(f"group without name or rules: {group}")
            continue
        for rule in group["rules"]:
            name = rule.get("alert", "?")
            if set(rule) - {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}:
                problems.append(f"{name}: unknown keys {set(rule) - {'alert', 'expr', 'for', 'labels', 'annotations'}}")
            if not re.fullmatch(r"[A-Z][A-Za-z0-9]+", name) or name in seen:
                problems.append(f"{name}: alert names are unique CamelCase")
            seen.add(name)
            expr = rule.get("expr", "")
            if not isinstance(expr, str) or not expr.strip() or not balanced(expr):
                problems.append(f"{name}: expr is empty or unbalanced")
                continue
            if "for" in rule and not DURATION.match(str(rule["for"])):
                problems.append(f"{name}: for {rule['for']!r} is not a duration")
            if rule.get("labels", {}).get("severity") not in ("warning", "critical"):
                problems.append(f"{name}: labels.severity must be warning or critical")
            annotations = rule.get("annotations", {})
            if not annotations.get("summary") or not annotations.get("description"):
                problems.append(f"{name}: summary and description are required")
            for metric in set(re.findall(r"\blockstep_[a-z_]+\b", expr)):
                if metric not in known:
                    problems.append(f"{name}: {metric} is not in the sidecar's exposition")
            for window in re.findall(r"\[([^\]]+)\]", expr):
                if not DURATION.match(window):
                    problems.append(f"{name}: range {window!r} is not a duration")
    if len(seen) < 5:
        problems.append(f"only {len(seen)} alerts")
    return problems


if __name__ == "__main__":
    found = check(sys.argv[1], sys.argv[2])
    for problem in found:
        print(problem)
    print(f"{'FAILED' if found else 'ok'}: {sys.argv[1]}")
    sys.exit(1 if found else 0)
