"""Time and peak memory of writing SynthPath slides of growing size.

Each size runs in its own subprocess (so peak resident memory, ru_maxrss, is
that of one slide) and writes to a temporary folder that is deleted afterwards.
Printed per size: seconds, peak RSS, file size, and the ratios that matter -
seconds per gigapixel (flat if time is linear in area) and peak memory
relative to the smallest size (flat if memory does not grow with the slide).

    python benchmarks/synth_slide.py [--sizes 8192 16384 32768] [--seed 0]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

CHILD = r"""
import json, resource, sys, time
from omnipath_lvlm.synth.slide import write_slide
size, seed, out = int(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
start_cpu, start = time.process_time(), time.perf_counter()
truth = write_slide(out / "bench.svs", size, seed=seed)
wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
print(json.dumps({
    "size": size, "seconds": wall, "cpu_seconds": cpu,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "file_mb": truth.path.stat().st_size / 2**20, "levels": len(truth.level_dimensions),
}))
"""


def run(size: int, seed: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="synthpath-bench-") as tmp:
        proc = subprocess.run([sys.executable, "-c", CHILD, str(size), str(seed), tmp],
                              capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"size {size} failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[8192, 16384, 32768])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rows = [run(size, args.seed) for size in args.sizes]
    base = rows[0]
    print(f"{'size':>7} {'levels':>6} {'Gpx':>6} {'wall s':>8} {'cpu s':>8} {'s/Gpx':>7} {'peak MB':>8} "
          f"{'mem x':>6} {'file MB':>8}")
    for r in rows:
        gpx = r["size"] ** 2 / 1e9
        print(f"{r['size']:>7} {r['levels']:>6} {gpx:>6.3f} {r['seconds']:>8.1f} {r['cpu_seconds']:>8.1f} "
              f"{r['seconds'] / gpx:>7.1f} {r['peak_rss_mb']:>8.0f} {r['peak_rss_mb'] / base['peak_rss_mb']:>6.2f} "
              f"{r['file_mb']:>8.1f}")
    first, last = rows[0], rows[-1]
    area = (last["size"] / first["size"]) ** 2
    print(f"area x{area:.0f}: time x{last['seconds'] / first['seconds']:.2f} "
          f"(linear would be x{area:.0f}), peak memory x{last['peak_rss_mb'] / first['peak_rss_mb']:.2f} "
          f"(flat would be x1)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
