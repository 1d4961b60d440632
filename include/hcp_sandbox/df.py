"""``df`` as seen inside an etcd pod (installed as a shim first on the exec PATH).

The pod's volume (``/var/lib``, the PVC) reports ``HCP_SANDBOX_VOLUME_CAPACITY`` bytes of capacity,
the real usage of the directory standing for it, and a free space that the ``volume`` fault can
override (``HCP_SANDBOX_VOLUME_FREE``). Other paths go to the real ``df``. Runs as a plain script:
no imports from the package, so it starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys


def _usage(path: str) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file deleted while we walk
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
    return total


def _human(n: float) -> str:
    for unit in ("", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.1f}{unit}" if unit and n < 10 else f"{n:.0f}{unit}"
        n /= 1024
    return str(n)


def _block_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "KB": 1000, "MB": 1000**2, "GB": 1000**3}
    digits = text.rstrip("KMGB") or "1"
    return int(digits) * units.get(text[len(digits) :], 1)


def main(argv: list[str]) -> int:
    volume = os.environ.get("HCP_SANDBOX_VOLUME", "")
    parser = argparse.ArgumentParser(prog="df", add_help=False)
    parser.add_argument("-h", "--human-readable", action="store_true")
    parser.add_argument("-k", action="store_true")
    parser.add_argument("-P", "--portability", action="store_true")
    parser.add_argument("-B", "--block-size", default=None)
    parser.add_argument("--output", nargs="?", const="source,size,used,avail,pcent,target")
    parser.add_argument("paths", nargs="*")
    try:
        args = parser.parse_args(argv)
    except SystemExit:
        return 1
    inside = [p for p in args.paths if volume and os.path.realpath(p).startswith(volume)]
    if not volume or (args.paths and len(inside) != len(args.paths)):
        real = shutil.which("df", path="/usr/bin:/bin") or "/bin/df"
        os.execv(real, [real, *argv])  # noqa: S606 - hand over to the real df, same argv
    capacity = int(os.environ.get("HCP_SANDBOX_VOLUME_CAPACITY", str(8 * 1024**3)))
    used = _usage(volume)
    free_override = os.environ.get("HCP_SANDBOX_VOLUME_FREE")
    avail = int(free_override) if free_override else max(capacity - used, 0)
    pcent = f"{-(-used * 100 // capacity)}%"
    block = _block_size(args.block_size) if args.block_size else 1024
    if args.human_readable:
        fmt = _human
    else:

        def fmt(n: float) -> str:
            return str(-(-int(n) // block))

    size_title = "Size" if args.human_readable else ("1K-blocks" if block == 1024 else f"{block}B-blocks")
    columns = {
        "source": ("Filesystem", "/dev/nvme1n1"),
        "size": (size_title, fmt(capacity)),
        "used": ("Used", fmt(used)),
        "avail": ("Avail" if args.human_readable or args.output else "Available", fmt(avail)),
        "pcent": ("Use%", pcent),
        "target": ("Mounted on", "/var/lib"),
    }
    fields = (args.output or "source,size,used,avail,pcent,target").split(",")
    rows = [[columns[f][0] for f in fields]] * (1) + [[columns[f][1] for f in fields]] * max(1, len(inside))
    widths = [max(len(r[i]) for r in rows) for i in range(len(fields))]
    for row in rows:
        cells = [
            c.ljust(w) if i in (0, len(row) - 1) else c.rjust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        print(" ".join(cells).rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
