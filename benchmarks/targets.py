"""Issue 8's two speed targets, measured in one run: the worker path and the HTTP path.

Runs, one after the other and each with its own interleaved rounds,

  python -m benchmarks.worker --variants messenger,actor,dramatiq,django-dramatiq
      (20,000 no-op messages, 2 processes x 8 threads, 3 rounds): messenger's handler under
      ``rundramatiq`` against a plain Dramatiq actor of the same project under ``rundramatiq``,
      target >= 0.9x (the issue's words); the stricter ratios against the ``dramatiq`` CLI with
      no Django and against the project without django_messenger are in the worker's own table;
  python -m benchmarks.http_dispatch --worker-classes sync --variants b,d --rounds 5
      messenger with confirms against a hand-written confirmed ``actor.send()`` view under
      gunicorn sync, target >= 0.95x;

prints each script's own tables as it goes, then one table of both targets with their noise
bands (the min–max of the per-round ratios) and verdicts. Ratios are what counts: they are
measured side by side, so they survive a machine's load better than absolute numbers (which
still widen the bands). Extra arguments go to both scripts (``--quick`` for a smoke run).

    python -m benchmarks.targets            # ~6 minutes on a quiet machine
    python -m benchmarks.targets --quick
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks._common import PYTHON, ROOT, print_table

RUNS = [
    ["benchmarks.worker", "--variants", "messenger,actor,dramatiq,django-dramatiq"],
    ["benchmarks.http_dispatch", "--worker-classes", "sync", "--variants", "b,d", "--rounds", "5"],
]


def main() -> int:
    extra = sys.argv[1:]
    if extra and extra[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    rows = []
    status = 0
    with tempfile.TemporaryDirectory(prefix="bench-targets-") as directory:
        for index, run in enumerate(RUNS):
            summary = Path(directory) / f"{index}.json"
            argv = [PYTHON, "-m", *run, *extra, "--summary", str(summary)]
            print(f"\n$ python -m {' '.join([*run, *extra])}", flush=True)
            code = subprocess.call(argv, cwd=ROOT)
            if code != 0 or not summary.exists():
                status = status or code or 1
                rows.append([run[0], "-", "-", "-", f"did not finish (exit status {code})"])
                continue
            for ratio in json.loads(summary.read_text(encoding="utf-8")):
                if ratio["name"].startswith(("worker: msg/s, messenger / plain actor", "HTTP sync: (d)/(b)")):
                    value = ratio["value"]
                    shown = f"{value:.2f}x" if value == value else "n/a"  # NaN: nothing measured
                    rows.append([ratio["name"], shown, ratio["band"], ratio["target"], ratio["verdict"]])
    print_table(
        "Issue 8's speed targets (noise band: min–max of the per-round ratios)",
        ["ratio", "median", "band", "target", "verdict"],
        rows,
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
