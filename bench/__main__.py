"""`python -m bench` (`make bench`): every benchmark script in turn, each in its own process.

Options are passed on to every script (`--quick`, `--json FILE`, `--profile DIR`); `--only NAME ...`
picks scripts. Exits 1 when a target was missed, 3 when a script failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time

from bench.common import EXIT_ERROR, EXIT_MISSED, child_env

SCRIPTS = ("xml_file", "runs", "rpc", "watch", "scheduler", "panel", "cluster")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--only", nargs="+", choices=SCRIPTS, default=list(SCRIPTS))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--json", default=None)
    p.add_argument("--profile", default=None)
    args = p.parse_args()
    passed = [*(["--quick"] if args.quick else []), *(["--json", args.json] if args.json else [])]
    passed += ["--profile", args.profile] if args.profile else []
    lines: list[str] = []
    codes: dict[str, int] = {}
    for script in args.only:
        began = time.monotonic()
        process = subprocess.Popen(
            [sys.executable, "-m", f"bench.{script}", *passed],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=child_env(),
        )
        assert process.stdout is not None
        for line in process.stdout:
            print(line, end="", flush=True)
            if line.startswith("RESULT "):
                lines.append(line.rstrip("\n"))
        codes[script] = process.wait()
        print(f"# bench.{script}: exit {codes[script]} after {time.monotonic() - began:.0f} s", flush=True)
    print("\n# summary")
    for line in lines:
        print(line)
    failed = [name for name, code in codes.items() if code not in (0, EXIT_MISSED)]
    missed = [name for name, code in codes.items() if code == EXIT_MISSED]
    if failed:
        print(f"# errors in: {', '.join(failed)}")
        sys.exit(EXIT_ERROR)
    if missed:
        print(f"# targets missed in: {', '.join(missed)}")
        sys.exit(EXIT_MISSED)
    print("# all targets met")


if __name__ == "__main__":
    main()
