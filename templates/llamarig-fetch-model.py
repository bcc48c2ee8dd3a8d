#!/usr/bin/env python3
"""Download a model's files from the Hugging Face Hub onto this rig (installed by llamarig).

Each file is fetched with huggingface_hub into a staging directory beside the
model, checked against the size and sha256 the Hub's metadata gave, and only
then moved into place, so a server reading the model never sees a partial file.
Files already in place with the recorded size and digest are not fetched again;
the manifest also records each verified file's identity (size, mtime, ctime,
inode), and a file whose identity changed since (someone wrote to it) is hashed
again and fetched again when its digest no longer matches. Before the first byte
moves, the free space under the model directory is checked against what is left
to fetch. The Hub token, if any, is read from --token-file (root-only), never from argv.
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


def identity(path):
    """What changes when a file is written to: size, mtime and ctime (seconds) and inode."""
    st = os.stat(path)
    return [st.st_size, int(st.st_mtime), int(st.st_ctime), st.st_ino]


def in_place(final, want, recorded, seen):
    """Whether `final` is the verified file the Hub describes, hashing only when it may have changed."""
    if not os.path.isfile(final) or os.path.getsize(final) != want["size"] or recorded != want:
        return False
    if seen is not None and seen == identity(final):
        return True
    if want.get("sha256") and sha256_of(final) != want["sha256"]:
        print(f"{final}: changed on disk since it was verified (sha256 differs): fetching it again", flush=True)
        return False
    return True


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
    old_ids = old.get("identity", {}) if old.get("repo") == args.repo else {}

    staging = os.path.join(args.dest, ".staging")
    os.makedirs(staging, exist_ok=True)
    todo = [path for path, want in sorted(files.items())
            if not in_place(os.path.join(args.dest, path), want, old_files.get(path), old_ids.get(path))]
    need = sum(files[p]["size"] for p in todo)
    st = os.statvfs(args.dest)
    free = st.f_bavail * st.f_frsize
    if need > free:
        sys.exit(f"llamarig: {args.repo}: {need / 2**30:.2f} GiB left to download, but only "
                 f"{free / 2**30:.2f} GiB free under {args.dest}; nothing was downloaded")
    fetched = 0
    for path, want in sorted(files.items()):
        final = os.path.join(args.dest, path)
        if path not in todo:
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
        ids = {path: identity(os.path.join(args.dest, path)) for path in files}
        json.dump({"repo": args.repo, "commit": args.commit, "files": files, "identity": ids}, handle,
                  indent=1, sort_keys=True)
    os.replace(tmp, manifest_path)
    print(f"llamarig: {args.repo}@{args.commit[:12]}: {fetched} file(s) fetched, {len(files) - fetched} already in place")


if __name__ == "__main__":
    main()
