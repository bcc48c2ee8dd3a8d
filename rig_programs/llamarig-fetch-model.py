#!/usr/bin/env python3
"""Download one revision of a model from the Hugging Face Hub onto this rig (installed by llamarig).

--dest is the revision's own directory (MODELS/NAME/COMMIT12): a new revision is
fetched beside the one that serves, which is left untouched. Each file is fetched
with huggingface_hub into a staging directory, checked against the size and
sha256 the Hub's metadata gave, and only then moved into place, so a server
reading the model never sees a partial file. A file that an earlier revision of
the same model already holds verified (same size and sha256) is hard-linked from
there instead of fetched. The manifest is rewritten after every verified file,
so a run cut off mid-download keeps what it finished: the next run fetches only
the rest. It also records each verified file's identity (size, mtime, ctime,
inode); a file whose identity changed since (someone wrote to it) is hashed again
and fetched again when its digest no longer matches. Before the first byte moves,
the free space is checked against what is left to fetch. The Hub token, if any,
is read from --token-file (root-only), never from argv. The manifest's file name
(--manifest) comes from the controller.

With --state DIR --manifest NAME it instead prints one line of JSON describing
what DIR holds, for the controller to compare with what it wants:
{"manifest": <the parsed manifest, or null>, "sizes": {relpath: size},
"identity": {relpath: [size, mtime_ns, ctime_ns, inode]}} for every regular file
under DIR except the staging directory. That mode needs only the standard library
and also runs inline (python3 -c "$SOURCE" --state DIR --manifest NAME).
"""

import argparse
import glob
import hashlib
import json
import os
import stat
import sys
import threading
import time

STAGING = ".staging"


def human(n):
    return f"{n / 2**30:.2f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


class Progress(threading.Thread):
    """A line every LLAMARIG_PROGRESS_S seconds (10) while one file downloads: this file's bytes of its size,
    the rate, the time left, and the whole download's bytes. huggingface_hub writes the file being fetched
    as STAGING/.cache/huggingface/download/**/*.incomplete (resumed from there after a cut-off run)."""

    def __init__(self, staging, path, size, done_before, total):
        super().__init__(daemon=True)
        self.staging, self.path, self.size, self.done_before, self.total = staging, path, size, done_before, total
        self.every = int(os.environ.get("LLAMARIG_PROGRESS_S", "10") or 10)
        self.stop = threading.Event()
        self.kept = self.current()

    def current(self):
        parts = glob.glob(os.path.join(self.staging, ".cache", "huggingface", "download", "**", "*.incomplete"),
                          recursive=True)
        sizes = [(os.path.getmtime(p), os.path.getsize(p)) for p in parts if os.path.exists(p)]
        return max(sizes)[1] if sizes else 0

    def run(self):
        started, start_bytes = time.monotonic(), self.kept
        while not self.stop.wait(self.every):
            got = self.current()
            rate = (got - start_bytes) / max(time.monotonic() - started, 1e-6)
            left = f", {int((self.size - got) / rate)} s left" if rate > 0 else ""
            print(f"fetching {self.path}: {human(got)} of {human(self.size)} ({100 * got // max(self.size, 1)}%), "
                  f"{rate / 1e6:.1f} MB/s{left}; all files: {human(self.done_before + got)} of {human(self.total)}",
                  flush=True)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(16 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def identity(path):
    """What changes when a file is written to: size, mtime and ctime (nanoseconds) and inode."""
    st = os.stat(path)
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def in_place(final, want, recorded, seen, quiet=False):
    """Whether `final` is the verified file the Hub describes, hashing only when it may have changed."""
    if not os.path.isfile(final) or os.path.getsize(final) != want["size"] or recorded != want:
        return False
    if seen is not None and seen == identity(final):
        return True
    if want.get("sha256") and sha256_of(final) != want["sha256"]:
        if not quiet:
            print(f"{final}: changed on disk since it was verified (sha256 differs): fetching it again", flush=True)
        return False
    return True


def load_manifest(directory, manifest):
    """The parsed manifest of a revision directory, or None when it is missing or not a JSON object."""
    try:
        with open(os.path.join(directory, manifest)) as handle:
            doc = json.load(handle)
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def read_manifest(directory, manifest, repo):
    """(files, identities) a revision directory's manifest records for ``repo``; empty when none."""
    old = load_manifest(directory, manifest)
    if old is None or old.get("repo") != repo:
        return {}, {}
    files, ids = old.get("files"), old.get("identity")
    return (files if isinstance(files, dict) else {}), (ids if isinstance(ids, dict) else {})


def write_manifest(dest, manifest, repo, commit, verified):
    """Record the verified files (path -> spec); identities are read now, after every move."""
    ids = {path: identity(os.path.join(dest, path)) for path in verified}
    tmp = os.path.join(dest, manifest + ".tmp")
    with open(tmp, "w") as handle:
        json.dump({"repo": repo, "commit": commit, "files": verified, "identity": ids}, handle,
                  indent=1, sort_keys=True)
    os.replace(tmp, os.path.join(dest, manifest))


def state(directory, manifest):
    """What ``directory`` holds: its manifest, and each regular file's size and identity (staging skipped)."""
    sizes, ids = {}, {}
    for root, dirs, names in os.walk(directory):
        if root == directory:
            dirs[:] = [d for d in dirs if d != STAGING]
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                if not stat.S_ISREG(os.lstat(path).st_mode):
                    continue
                found = identity(path)
            except FileNotFoundError:  # removed while we looked
                continue
            rel = os.path.relpath(path, directory).replace(os.sep, "/")
            sizes[rel], ids[rel] = found[0], found
    return {"manifest": load_manifest(directory, manifest), "sizes": sizes, "identity": ids}


def reusable(dest, manifest, repo, path, want):
    """A verified copy of ``path`` in another revision directory of the same model, or None."""
    parent = os.path.dirname(os.path.abspath(dest))
    for name in sorted(os.listdir(parent)):
        other = os.path.join(parent, name)
        if other == os.path.abspath(dest) or not os.path.isdir(other):
            continue
        files, ids = read_manifest(other, manifest, repo)
        candidate = os.path.join(other, path)
        if want.get("sha256") and in_place(candidate, want, files.get(path), ids.get(path), quiet=True):
            return candidate
    return None


def main():
    parser = argparse.ArgumentParser(prog="llamarig-fetch-model.py")
    parser.add_argument("--manifest", required=True, help="the manifest's file name in a revision directory")
    parser.add_argument("--state", metavar="DIR", help="print what DIR holds as JSON, download nothing")
    parser.add_argument("--repo")
    parser.add_argument("--commit")
    parser.add_argument("--dest")
    parser.add_argument("--files", help="JSON: {path: {size, sha256}}")
    parser.add_argument("--token-file")
    args = parser.parse_args()
    if os.sep in args.manifest or args.manifest in ("", ".", ".."):
        parser.error(f"--manifest is a file name, not a path: {args.manifest!r}")
    if args.state is not None:
        print(json.dumps(state(args.state, args.manifest), sort_keys=True))
        return
    missing = [f"--{name}" for name in ("repo", "commit", "dest", "files") if getattr(args, name) is None]
    if missing:
        parser.error("the following arguments are required: " + ", ".join(missing))

    files = json.loads(args.files)
    token = None
    if args.token_file and os.path.exists(args.token_file):
        with open(args.token_file) as handle:
            token = handle.read().strip() or None

    staging = os.path.join(args.dest, STAGING)
    os.makedirs(staging, exist_ok=True)
    old_files, old_ids = read_manifest(args.dest, args.manifest, args.repo)
    verified = {path: want for path, want in sorted(files.items())
                if in_place(os.path.join(args.dest, path), want, old_files.get(path), old_ids.get(path))}
    todo = [path for path in sorted(files) if path not in verified]
    linked = 0
    for path in list(todo):
        source = reusable(args.dest, args.manifest, args.repo, path, files[path])
        if source is None:
            continue
        final = os.path.join(args.dest, path)
        os.makedirs(os.path.dirname(final), exist_ok=True)
        tmp = os.path.join(staging, os.path.basename(path) + ".link")
        if os.path.lexists(tmp):
            os.unlink(tmp)
        os.link(source, tmp)
        os.replace(tmp, final)
        print(f"{path}: the same file as {source} (sha256 {files[path]['sha256'][:12]}): linked, not fetched", flush=True)
        verified[path] = files[path]
        todo.remove(path)
        linked += 1
    write_manifest(args.dest, args.manifest, args.repo, args.commit, verified)

    need = sum(files[p]["size"] for p in todo)
    st = os.statvfs(args.dest)
    free = st.f_bavail * st.f_frsize
    if need > free:
        sys.exit(f"llamarig: {args.repo}: {need / 2**30:.2f} GiB left to download, but only "
                 f"{free / 2**30:.2f} GiB free under {args.dest}; nothing was downloaded")

    if todo:
        from huggingface_hub import hf_hub_download
    done_bytes = 0
    for path in todo:
        want = files[path]
        final = os.path.join(args.dest, path)
        progress = Progress(staging, path, want["size"], done_bytes, need)
        kept = f", {human(progress.kept)} kept from a cut-off run" if progress.kept else ""
        print(f"fetching {path} ({want['size']} bytes, {human(want['size'])}{kept})", flush=True)
        started = time.monotonic()
        progress.start()
        try:
            got = hf_hub_download(repo_id=args.repo, filename=path, revision=args.commit,
                                  local_dir=staging, token=token)
        except Exception as exc:  # noqa: BLE001 - a cut connection, a Hub error: said in words, not a traceback
            sys.exit(f"llamarig: {path}: the download failed ({type(exc).__name__}: {str(exc)[:300]}); "
                     f"{len(verified)} file(s) verified so far are kept, the next run fetches the rest")
        finally:
            progress.stop.set()
        took = time.monotonic() - started
        print(f"fetched {path}: {human(want['size'])} in {took:.0f} s "
              f"({(want['size'] - progress.kept) / max(took, 1e-6) / 1e6:.1f} MB/s)", flush=True)
        done_bytes += want["size"]
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
        verified[path] = want
        write_manifest(args.dest, args.manifest, args.repo, args.commit, verified)  # a cut-off run keeps what it finished

    print(f"llamarig: {args.repo}@{args.commit[:12]}: {len(todo)} file(s) fetched, {linked} linked from an "
          f"earlier revision, {len(files) - len(todo) - linked} already in place")


if __name__ == "__main__":
    main()
