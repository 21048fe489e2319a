"""Cold wall time of `mupctl plan` (goal ≤ 0.5 s): a fresh interpreter per run, median of N.

    python benchmarks/plan_time.py [--runs 10] [--recipe recipes/gpt2-124m-mup.yaml]
"""

import argparse
import statistics
import subprocess
import sys
import time

parser = argparse.ArgumentParser()
parser.add_argument("--runs", type=int, default=10)
parser.add_argument("--recipe", default="recipes/gpt2-124m-mup.yaml")
args = parser.parse_args()

for label, cmd in [("python -c pass", [sys.executable, "-c", "pass"]),
                   ("mupctl plan --json", [sys.executable, "-m", "mupctl", "plan", args.recipe, "--json"]),
                   ("mupctl plan (table)", [sys.executable, "-m", "mupctl", "plan", args.recipe])]:
    times = []
    for _ in range(args.runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    print(f"{label:24s} median {statistics.median(times):.3f} s  min {min(times):.3f} s  ({args.runs} runs)")
