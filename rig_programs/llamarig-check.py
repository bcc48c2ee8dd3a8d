#!/usr/bin/env python3
"""Check one llama-server service on this rig and print the verdict as JSON (installed by llamarig).

Waits for the unit to be active and /health to answer 200 (503 while the model
loads), reads /props to compare the live context size with the declared one,
then asks for one chat completion. A server that exits while loading (systemd
waits to restart it) fails at once rather than at the timeout. On any failure the
unit's journal tail is included. Always exits 0: the verdict is in the JSON.

With --rollback RECORD (run by the deploy after a failed check) it instead puts
back the last unit that answered (the record the deploy keeps of it), restarts
it, checks that it answers, says on stderr what it did, and exits 1: the deploy
failed even when the old service is back.
"""

import argparse
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request


AUTH = {}  # Authorization header when the server has an API key (read from a root-only file, never argv)


def get(url, timeout=10):
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=timeout) as response:
        return response.status, response.read()


def unit_state(unit):
    """systemd's ActiveState, or "auto-restart" when the server exited and systemd waits to start it again."""
    out = subprocess.run(["systemctl", "show", "-p", "ActiveState", "-p", "SubState", "--value", unit],
                         capture_output=True, text=True)
    words = out.stdout.split()
    if "auto-restart" in words:
        return "auto-restart"
    return words[0] if words else "unknown"


def journal(unit, lines=40):
    out = subprocess.run(["journalctl", "-u", unit, "-n", str(lines), "--no-pager", "-o", "cat"],
                         capture_output=True, text=True)
    return out.stdout[-6000:]


def check(args):
    result = {"unit": args.unit, "ok": False}
    deadline = time.monotonic() + args.timeout
    last = "no answer"
    while True:
        state = unit_state(args.unit)
        if state == "auto-restart":
            result["error"] = f"{args.unit} exited while starting (systemd is waiting to restart it)"
            return result
        if state in ("failed", "inactive") and time.monotonic() > deadline - args.timeout + 5:
            result["error"] = f"{args.unit} is {state}"
            return result
        try:
            status, _ = get(args.url + "/health")
            if status == 200:
                break
            last = f"/health answered {status}"
        except urllib.error.HTTPError as exc:
            last = f"/health answered {exc.code}"
        except OSError as exc:
            last = f"/health: {exc}"
        if time.monotonic() > deadline:
            result["error"] = f"{args.unit} did not become healthy in {args.timeout} s ({last})"
            return result
        time.sleep(1)
    result["health"] = "ok"

    _, body = get(args.url + "/props")
    props = json.loads(body)
    settings = props.get("default_generation_settings", {})
    n_ctx = settings.get("n_ctx")
    slots = props.get("total_slots") or 1
    result["live_n_ctx"] = n_ctx
    result["live_slots"] = slots
    if args.ctx is not None:
        # Per-slot context is the whole context when the KV cache is unified, else a share of it.
        if n_ctx not in (args.ctx, args.ctx // slots):
            result["error"] = (f"declared ctx_size {args.ctx}, but the server runs with n_ctx {n_ctx} "
                               f"per slot ({slots} slot(s)): it was changed at start-up")
            return result

    request = urllib.request.Request(
        args.url + "/v1/chat/completions",
        data=json.dumps({"messages": [{"role": "user", "content": args.prompt}],
                         "max_tokens": args.max_tokens, "temperature": 0}).encode(),
        headers={"Content-Type": "application/json", **AUTH},
    )
    try:
        with urllib.request.urlopen(request, timeout=max(60, args.timeout)) as response:
            answer = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as exc:
        result["error"] = f"chat completion failed: {exc}"
        return result
    message = answer["choices"][0]["message"]
    result["answer"] = (message.get("content") or message.get("reasoning_content") or "").strip()
    result["completion_tokens"] = answer.get("usage", {}).get("completion_tokens")
    if not result["completion_tokens"]:
        result["error"] = "the chat completion produced no tokens"
        return result
    result["ok"] = True
    return result


def say(text):
    print("llamarig: " + text, file=sys.stderr, flush=True)


def rollback(args):
    """Put back the last unit of args.unit that answered, restart it and check it; always 1."""
    path = f"/etc/systemd/system/{args.unit}"
    try:
        with open(args.rollback) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        say(f"no earlier {args.unit} has answered a check: nothing to roll back to, it is left as it is")
        return 1
    try:
        with open(path) as handle:
            current = handle.read()
    except FileNotFoundError:
        current = None
    if current == record["text"]:
        say(f"{args.unit} is already the last unit that answered: nothing older to roll back to")
        return 1
    tmp = path + ".llamarig-rollback"
    with open(tmp, "w") as handle:
        handle.write(record["text"])
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    subprocess.run(["systemctl", "daemon-reload"], check=False)
    subprocess.run(["systemctl", "reset-failed", args.unit], check=False, capture_output=True)
    subprocess.run(["systemctl", "restart", args.unit], check=False)
    AUTH.clear()
    if record.get("api_key_file"):
        with open(record["api_key_file"]) as handle:
            AUTH["Authorization"] = "Bearer " + handle.readline().rstrip("\n")
    args.url, args.ctx = record["url"], None
    try:
        result = check(args)
    except Exception as exc:  # noqa: BLE001 - reported, never raised
        result = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if result["ok"]:
        say(f"rolled {args.unit} back to the last unit that answered ({args.rollback}): "
            f"it answers again at {record['url']}")
    else:
        say(f"rolled {args.unit} back to the last unit that answered ({args.rollback}), "
            f"but it does not answer either: {result.get('error')}")
    return 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rollback", metavar="RECORD", help="restore the unit from RECORD, restart and check it")
    parser.add_argument("--unit", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--ctx", type=int)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--api-key-file")
    args = parser.parse_args()
    if args.rollback:
        sys.exit(rollback(args))
    if args.api_key_file:
        with open(args.api_key_file) as handle:
            AUTH["Authorization"] = "Bearer " + handle.readline().rstrip("\n")
    try:
        result = check(args)
    except Exception as exc:  # the verdict must always come back as JSON
        result = {"unit": args.unit, "ok": False, "error": f"{type(exc).__name__}: {exc}"}
    if not result["ok"]:
        result["journal"] = journal(args.unit)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
