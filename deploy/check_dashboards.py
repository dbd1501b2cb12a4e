#!/usr/bin/env python3
"""Checks the Grafana dashboards under deploy/grafana/dashboards (standard library only).

For every dashboard JSON file:
  * it parses, has a uid and a title, and no two dashboards share a uid;
  * every "datasource" anywhere in it (panels, targets, template variables) is the
    Prometheus datasource provisioned in deploy/grafana/provisioning/datasources (its uid is
    read from that file), and every non-row panel names it;
  * panel ids are unique and every panel fits the 24-column grid;
  * template variables are query variables of the form label_values(<selector>, <label>);
  * every target has an expr that uses only the variables $run, $task, $worker,
    $__rate_interval, $__interval and $__range;
  * with --promtool, every expr (with the variables replaced by sample values) and every
    variable's selector parses as PromQL: they are written as recording rules into a
    temporary file that `promtool check rules` reads.

Usage: check_dashboards.py [--promtool PATH] [DEPLOY_DIR]   (default: this script's folder)
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile

ALLOWED_VARS = {"run", "task", "worker", "__rate_interval", "__interval", "__range"}
# Sample values used when checking that expressions parse; multi-value variables get a
# regex alternation, as Grafana substitutes them.
SAMPLE_VALUES = {
    "run": "run1",
    "task": "task_a|task_b",
    "worker": "w0|w1",
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "1h",
}
VAR_REF = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)(?::\w+)?\]\]")
LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(.+?)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)\s*$")


def provisioned_uid(deploy_dir):
    path = os.path.join(deploy_dir, "grafana", "provisioning", "datasources", "steadyeval.yml")
    with open(path, encoding="utf-8") as f:
        uids = re.findall(r"^\s*uid:\s*['\"]?([A-Za-z0-9_.-]+)['\"]?\s*$", f.read(), re.M)
    if len(uids) != 1:
        raise SystemExit(f"{path}: expected exactly one datasource uid, found {uids}")
    return uids[0]


def substitute(expr):
    def repl(m):
        name = m.group(1) or m.group(2) or m.group(3)
        return SAMPLE_VALUES.get(name, m.group(0))
    return VAR_REF.sub(repl, expr)


def walk_datasources(node, where, errors, uid):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                ok = (isinstance(value, dict) and value.get("uid") == uid
                      and value.get("type", "prometheus") == "prometheus") or value == uid
                if not ok:
                    errors.append(f"{where}: datasource {json.dumps(value)} is not the "
                                  f"provisioned uid {uid!r}")
            walk_datasources(value, where, errors, uid)
    elif isinstance(node, list):
        for item in node:
            walk_datasources(item, where, errors, uid)


def all_panels(panels):
    for p in panels:
        yield p
        yield from all_panels(p.get("panels", []))


def check_dashboard(path, uid, errors, exprs):
    name = os.path.basename(path)
    try:
        with open(path, encoding="utf-8") as f:
            dash = json.load(f)
    except (OSError, ValueError) as e:
        errors.append(f"{name}: does not parse: {e}")
        return None
    if not dash.get("uid") or not dash.get("title"):
        errors.append(f"{name}: missing uid or title")
    walk_datasources(dash, name, errors, uid)

    variables = dash.get("templating", {}).get("list", [])
    defined = set()
    for v in variables:
        vname = v.get("name", "?")
        defined.add(vname)
        where = f"{name}: variable {vname}"
        if v.get("type") != "query":
            errors.append(f"{where}: type {v.get('type')!r}, expected 'query'")
            continue
        query = v.get("query")
        if isinstance(query, dict):
            query = query.get("query")
        m = LABEL_VALUES.match(query or "")
        if not m:
            errors.append(f"{where}: query {query!r} is not label_values(<selector>, <label>)")
            continue
        exprs.append((where, query, substitute(m.group(1))))
        for ref in VAR_REF.finditer(query):
            ref_name = ref.group(1) or ref.group(2) or ref.group(3)
            if ref_name not in ALLOWED_VARS:
                errors.append(f"{where}: uses ${ref_name}")
        if v.get("datasource") is None:
            errors.append(f"{where}: no datasource")

    ids = set()
    panel_count = 0
    for p in all_panels(dash.get("panels", [])):
        pid = p.get("id")
        where = f"{name}: panel {pid} {p.get('title')!r}"
        if pid in ids:
            errors.append(f"{where}: duplicate id")
        ids.add(pid)
        g = p.get("gridPos", {})
        if not all(isinstance(g.get(k), int) for k in ("x", "y", "w", "h")) or \
                g["x"] < 0 or g["w"] <= 0 or g["x"] + g["w"] > 24:
            errors.append(f"{where}: bad gridPos {g}")
        if p.get("type") == "row":
            continue
        panel_count += 1
        if p.get("datasource") is None:
            errors.append(f"{where}: no datasource")
        targets = p.get("targets") or []
        if not targets:
            errors.append(f"{where}: no targets")
        for t in targets:
            expr = t.get("expr")
            twhere = f"{where} target {t.get('refId')}"
            if not expr:
                errors.append(f"{twhere}: no expr")
                continue
            if t.get("datasource") is None:
                errors.append(f"{twhere}: no datasource")
            for ref in VAR_REF.finditer(expr):
                ref_name = ref.group(1) or ref.group(2) or ref.group(3)
                if ref_name not in ALLOWED_VARS:
                    errors.append(f"{twhere}: uses ${ref_name}, allowed: "
                                  f"{', '.join(sorted(ALLOWED_VARS))}")
                elif not ref_name.startswith("__") and ref_name not in defined:
                    errors.append(f"{twhere}: uses ${ref_name}, which the dashboard "
                                  f"does not define")
            exprs.append((twhere, expr, substitute(expr)))
    if panel_count == 0:
        errors.append(f"{name}: no panels")
    return dash.get("uid")


def check_promql(promtool, exprs, errors):
    """Writes each expression as a recording rule and lets promtool parse them."""
    with tempfile.TemporaryDirectory() as tmp:
        rules = os.path.join(tmp, "dashboard-exprs.yml")
        with open(rules, "w", encoding="utf-8") as f:
            f.write("groups:\n  - name: dashboard-exprs\n    rules:\n")
            for i, (_, _, expr) in enumerate(exprs):
                f.write(f"      - record: dashboard_expr_{i}\n")
                f.write(f"        expr: {json.dumps(expr)}\n")
        try:
            proc = subprocess.run([promtool, "check", "rules", rules],
                                  capture_output=True, text=True)
        except OSError as e:
            errors.append(f"cannot run {promtool}: {e} (run scripts/install-deps.sh)")
            return
        if proc.returncode != 0:
            out = proc.stdout + proc.stderr
            for m in re.finditer(r'rule (\d+), "dashboard_expr_\d+": (.*)', out):
                i = int(m.group(1)) - 1
                if 0 <= i < len(exprs):
                    errors.append(f"{exprs[i][0]}: {exprs[i][1]!r}: {m.group(2)}")
            errors.append("promtool check rules on the dashboard expressions failed:\n" + out)


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--promtool", help="promtool binary; when given, every expression is parsed")
    ap.add_argument("deploy_dir", nargs="?", default=here)
    args = ap.parse_args()

    uid = provisioned_uid(args.deploy_dir)
    dash_dir = os.path.join(args.deploy_dir, "grafana", "dashboards")
    files = sorted(os.path.join(dash_dir, f) for f in os.listdir(dash_dir) if f.endswith(".json"))
    errors, exprs, uids = [], [], {}
    if not files:
        errors.append(f"{dash_dir}: no dashboards")
    for path in files:
        duid = check_dashboard(path, uid, errors, exprs)
        if duid in uids:
            errors.append(f"{os.path.basename(path)}: uid {duid!r} also used by {uids[duid]}")
        elif duid:
            uids[duid] = os.path.basename(path)
    if args.promtool and exprs:
        check_promql(args.promtool, exprs, errors)
    for e in errors:
        print(f"ERROR: {e}", file=sys.stderr)
    if errors:
        return 1
    print(f"{len(files)} dashboards, {len(exprs)} expressions: OK (datasource uid {uid!r}"
          f"{', PromQL parsed by promtool' if args.promtool else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
