"""How long hnas takes to load a converted NAS-Bench-101 table of the full space (423,624 cells).

    python perf/bench_nb101_table.py [--repeat 3]

Writes a table of made-up cells of the official size and shape (tests/nb101_records.py `synthetic_arrays`) to
a temporary folder with `save_table`, then times `load_table` on it (each time from the file, as a new
process does) and one `row` lookup, and prints the seconds. What a search waits for before its first query.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    from nb101_records import synthetic_arrays

    from hnas.benchmarks import nb101
    from hnas.benchmarks.nb101 import table_file

    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = nb101.save_table(nb101.NB101Table(synthetic_arrays(nb101.NUM_CELLS)), Path(folder) / "full.npz")
        print(f"wrote {path.stat().st_size / 2**20:.0f} MiB ({nb101.NUM_CELLS} cells) in "
              f"{time.perf_counter() - start:.1f} s")
        for attempt in range(args.repeat):
            table_file._CACHE.clear()  # read the file each time, as a new process does
            start = time.perf_counter()
            table = nb101.load_table(path)
            loaded = time.perf_counter() - start
            start = time.perf_counter()
            table.row(f"{nb101.NUM_CELLS - 1:032x}")
            print(f"load {attempt + 1}: {loaded:.2f} s, first row lookup {time.perf_counter() - start:.3f} s")


if __name__ == "__main__":
    main()
