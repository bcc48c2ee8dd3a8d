"""The ``llamarig`` command: offline checks and previews of an inventory.

No rig is contacted. ``check`` validates every host; ``render`` prints the
unit each service would get. Errors are printed, never raised.
"""

from __future__ import annotations

import argparse
import sys

from . import layout
from .hub import HubError, hub_token, resolve_model
from .inventory import InventoryError, load_inventory
from .unit import render_unit
from .validate import format_problems, validate_all


def _load(inventory: str):
    entries = load_inventory(inventory)
    return validate_all([(e.name, e.data) for e in entries])


def cmd_check(args) -> int:
    docs, problems = _load(args.inventory)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return 1
    services = sum(len(doc["services"]) for doc in docs.values())
    print(f"llamarig: {len(docs)} rig(s), {services} service(s): data is valid")
    return 0


def model_file_for(doc: dict, model_name: str) -> str:
    model = doc["models"][model_name]
    if model["file"]:
        return model["file"]
    resolved = resolve_model(model_name, model, doc["hub_endpoint"], hub_token(doc["hub_token_env"]))
    return resolved.file


def cmd_render(args) -> int:
    docs, problems = _load(args.inventory)
    if problems:
        print(format_problems(problems), file=sys.stderr)
        return 1
    hosts = [args.host] if args.host else list(docs)
    unknown = [h for h in hosts if h not in docs]
    if unknown:
        print(f"llamarig: no host {unknown[0]} in {args.inventory} (hosts: {', '.join(docs)})", file=sys.stderr)
        return 1
    shown = 0
    for host in hosts:
        doc = docs[host]
        for service in doc["services"]:
            if args.service and service["name"] != args.service:
                continue
            try:
                text = render_unit(host, doc, service, model_file_for(doc, service["model"]))
            except HubError as exc:
                print(f"llamarig: {host}: services {service['name']}: {exc}", file=sys.stderr)
                return 1
            print(f"# --- {host}: /etc/systemd/system/{layout.unit_name(service['name'])}")
            print(text)
            shown += 1
    if shown == 0:
        print("llamarig: no service matches", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="llamarig", description="llamarig: declared llama.cpp rigs")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="validate an inventory and its group data")
    check.add_argument("inventory")
    check.set_defaults(func=cmd_check)
    render = sub.add_parser("render", help="print the systemd unit of each service")
    render.add_argument("inventory")
    render.add_argument("--host")
    render.add_argument("--service")
    render.set_defaults(func=cmd_render)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except InventoryError as exc:
        print(f"llamarig: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
