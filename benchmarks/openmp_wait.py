"""How OpenMP's waiting threads change our speed on two cores, idle and shared.

    python3 benchmarks/openmp_wait.py RUN IMAGE            # idle, then beside a busy neighbour

For each libgomp setting (the default spin, GOMP_SPINCOUNT=10000 as `import sindiffusion` sets
it, OMP_WAIT_POLICY=PASSIVE) a fresh Python (the setting is read when torch loads) times a
zero-training sample of IMAGE, a sample of the trained RUN (medians) and 20 training steps of
RUN's config; then the same beside a neighbour process running a 2-thread matmul loop.
Prints a table; the neighbour is stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

SETTINGS = {
    "default spin": {},
    "GOMP_SPINCOUNT=10000": {"GOMP_SPINCOUNT": "10000"},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
}

# torch is imported before sindiffusion so that the setting under test is the only one.
CHILD = """
import json, statistics, sys, time
import torch
torch.set_num_threads(2)
import sindiffusion
run, image = sys.argv[1], sys.argv[2]

def median_time(fn, n):
    fn(99)
    times = []
    for i in range(n):
        t0 = time.perf_counter(); fn(i); times.append(time.perf_counter() - t0)
    return statistics.median(times)

zero = sindiffusion.zero_training(image)
model = sindiffusion.load(run)
out = {"zero": median_time(lambda s: zero.sample(n=1, seed=s), 5),
       "trained": median_time(lambda s: model.sample(n=1, seed=s), 3)}
t0 = time.perf_counter()
sindiffusion.train(model.image, config=model.config, steps=20, progress=False)
out["train20"] = time.perf_counter() - t0
print(json.dumps(out))
"""

NEIGHBOUR = "import torch\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\nwhile True: a @ a\n"


def measure(run: str, image: str, env: dict[str, str]) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    done = subprocess.run([sys.executable, "-c", CHILD, run, image], env=clean | env,
                          capture_output=True, text=True, check=True)  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", help="a trained run folder")
    p.add_argument("image", help="an image for the zero-training sample")
    args = p.parse_args(argv)
    results = {}
    for busy in (False, True):
        neighbour = subprocess.Popen([sys.executable, "-c", NEIGHBOUR]) if busy else None
        try:
            time.sleep(2 if busy else 0)
            for name, env in SETTINGS.items():
                results[name, busy] = measure(args.run, args.image, env)
                print(name, "busy" if busy else "idle", results[name, busy], flush=True)
        finally:
            if neighbour is not None:
                neighbour.kill()
    print("\n| libgomp setting | zero-training sample, idle / busy (s) "
          "| trained sample, idle / busy (s) | 20 training steps, idle / busy (s) |")  # fmt: skip
    print("| --- | ---: | ---: | ---: |")
    for name in SETTINGS:
        idle, busy = results[name, False], results[name, True]
        cells = [f"{idle[k]:.2f} / {busy[k]:.2f}" for k in ("zero", "trained", "train20")]
        print(f"| {name} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
