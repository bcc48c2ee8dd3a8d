#!/usr/bin/env python3
"""Check one llama-server service on this rig and print the verdict as JSON (installed by llamarig).

Waits for the unit to be active and /health to answer 200 (503 while the model
loads), reads /props to compare the live context size with the declared one,
then asks for one chat completion. On any failure the unit's journal tail is
included. Always exits 0: the verdict is in the JSON.
"""

import argparse
import json
import subprocess
import time
import urllib.error
import urllib.request


AUTH = {}  # Authorization header when the server has an API key (read from a root-only file, never argv)


def get(url, timeout=10):
    with urllib.request.urlopen(urllib.request.Request(url, headers=AUTH), timeout=timeout) as response:
        return response.status, response.read()


def unit_state(unit):
    out = subprocess.run(["systemctl", "is-active", unit], capture_output=True, text=True)
    return out.stdout.strip()


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


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--unit", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--ctx", type=int)
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--api-key-file")
    args = parser.parse_args()
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
