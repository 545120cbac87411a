"""`biomero workflows`: configured workflows, versions and parameters."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("workflows", help="list workflows, versions and their parameters")
    p.add_argument("--json", action="store_true", help="print JSON for scripts and monitoring")
    p.set_defaults(func=run)


def _describe(wf) -> dict:  # type: ignore[no-untyped-def]
    # <wf>_skills_path / <wf>_plugin_path: written by biomero-workflow-skills for its own
    # tools; shown here (the worker does not act on them).
    extra = {
        key: getattr(wf.settings, key)
        for key in ("skills_path", "plugin_path")
        if getattr(wf.settings, key)
    }
    return {
        **extra,
        "name": wf.name,
        "version": wf.version,
        "title": wf.descriptor.name,
        "description": wf.descriptor.description,
        "image": wf.descriptor.image,
        "parameters": [
            {
                "id": p.id,
                "type": p.kind,
                "default": p.default,
                "optional": p.optional,
                "choices": list(p.choices),
                "description": p.description,
                **({"formats": list(p.formats)} if p.kind == "file" else {}),
            }
            for p in wf.descriptor.parameters
            if not p.server_set
        ],
    }


def run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from biomeroworker.cli.common import settings_from
    from biomeroworker.workflows.catalog import list_workflows

    items = list_workflows(settings_from(args))
    rows = [
        _describe(i) if not isinstance(i, tuple) else {"name": i[0], "error": str(i[1])}
        for i in items
    ]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 1 if any("error" in r for r in rows) else 0
    console = Console()
    for row in rows:
        if "error" in row:
            console.print(f"[bold]{row['name']}[/]: [red]{row['error']}[/]")
            continue
        table = Table(
            title=f"{row['name']} {row['version']}  ({row['title']})", title_justify="left"
        )
        for column in ("parameter", "type", "default", "allowed"):
            table.add_column(column)
        for p in row["parameters"]:
            allowed = ", ".join(map(str, p["choices"])) if p["choices"] else ""
            if p["type"] == "file":  # a file parameter: --param <id>=<local file>
                allowed = f"a file ({', '.join(p['formats']) or 'any format'})"
            table.add_row(p["id"], str(p["type"]), repr(p["default"]), allowed)
        console.print(table)
        for key in ("skills_path", "plugin_path"):
            if key in row:
                console.print(f"{row['name']}_{key} = {row[key]}")
    return 1 if any("error" in r for r in rows) else 0
