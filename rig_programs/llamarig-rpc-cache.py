#!/usr/bin/env python3
"""Keep rpc-server's tensor cache under a size: delete the least recently used files first.

    llamarig-rpc-cache.py DIR MAX_BYTES

rpc-server -c writes one file per tensor it received (named by the tensor's hash) and never deletes one
(llama.cpp #27585). Run before every start of the unit (ExecStartPre=). A file's last use is its access
time or, where the file system does not keep one, its modification time. Standard library only.
"""

import os
import sys


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    top, limit = sys.argv[1], int(sys.argv[2])
    found = []
    for root, _dirs, names in os.walk(top):
        for name in names:
            path = os.path.join(root, name)
            try:
                st = os.stat(path, follow_symlinks=False)
            except OSError:
                continue
            found.append((max(st.st_atime, st.st_mtime), st.st_size, path))
    total = sum(size for _t, size, _p in found)
    removed = freed = 0
    for _t, size, path in sorted(found):
        if total - freed <= limit:
            break
        try:
            os.remove(path)
        except OSError:
            continue
        removed += 1
        freed += size
    print(f"llamarig-rpc-cache: {top}: {len(found)} file(s), {total} bytes; removed {removed} ({freed} bytes), "
          f"limit {limit}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
