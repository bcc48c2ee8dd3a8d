#!/usr/bin/env python3
"""Download a model's files from the Hugging Face Hub onto this rig (installed by llamarig).

Each file is fetched with huggingface_hub into a staging directory beside the
model, checked against the size and sha256 the Hub's metadata gave, and only
then moved into place, so a server reading the model never sees a partial file.
Files already in place with the recorded size and digest are not fetched again.
The Hub token, if any, is read from --token-file (root-only), never from argv.
"""

import argparse
import hashlib
import json
import os
import sys


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(16 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repo", required=True)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--dest", required=True)
    parser.add_argument("--files", required=True, help="JSON: {path: {size, sha256}}")
    parser.add_argument("--token-file")
    args = parser.parse_args()

    from huggingface_hub import hf_hub_download

    files = json.loads(args.files)
    token = None
    if args.token_file and os.path.exists(args.token_file):
        with open(args.token_file) as handle:
            token = handle.read().strip() or None

    manifest_path = os.path.join(args.dest, ".llamarig-manifest.json")
    try:
        with open(manifest_path) as handle:
            old = json.load(handle)
    except (OSError, ValueError):
        old = {}
    old_files = old.get("files", {}) if old.get("repo") == args.repo else {}

    staging = os.path.join(args.dest, ".staging")
    os.makedirs(staging, exist_ok=True)
    fetched = 0
    for path, want in sorted(files.items()):
        final = os.path.join(args.dest, path)
        if os.path.isfile(final) and os.path.getsize(final) == want["size"] and old_files.get(path) == want:
            continue
        print(f"fetching {path} ({want['size']} bytes)", flush=True)
        got = hf_hub_download(repo_id=args.repo, filename=path, revision=args.commit,
                              local_dir=staging, token=token)
        size = os.path.getsize(got)
        if size != want["size"]:
            sys.exit(f"llamarig: {path}: {size} bytes downloaded, the Hub says {want['size']}")
        if want.get("sha256"):
            digest = sha256_of(got)
            if digest != want["sha256"]:
                os.unlink(got)
                sys.exit(f"llamarig: {path}: sha256 {digest} does not match the Hub's {want['sha256']}")
        os.makedirs(os.path.dirname(final), exist_ok=True)
        os.chmod(got, 0o644)
        os.replace(got, final)
        fetched += 1

    tmp = manifest_path + ".tmp"
    with open(tmp, "w") as handle:
        json.dump({"repo": args.repo, "commit": args.commit, "files": files}, handle, indent=1, sort_keys=True)
    os.replace(tmp, manifest_path)
    print(f"llamarig: {args.repo}@{args.commit[:12]}: {fetched} file(s) fetched, {len(files) - fetched} already in place")


if __name__ == "__main__":
    main()
