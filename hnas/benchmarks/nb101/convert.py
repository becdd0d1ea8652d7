"""Convert the official NAS-Bench-101 file (or NASLib's pickle of it) into the compact NB101 table (.npz).

    hnas-nb101-convert --tfrecord nasbench_only108.tfrecord --out nb101.npz
    hnas-nb101-convert --tfrecord nasbench_full.tfrecord --sha256 --out nb101-full.npz
    hnas-nb101-convert --naslib-pkl nb101_dummy.pkl --trust-pickle --out fixture.npz

Records may come in any order; the runs of a cell are numbered in the order they appear (nasbench/api.py).
Measured on synthetic records in the official layout: about 65 us per record with payload checksums in pure
Python, so about 1.5 minutes for nasbench_only108 (1,270,872 records) and 6 for nasbench_full (5,083,488);
--no-check-data skips the payload checksums (about 40% faster; the length checksums are always checked).
Memory peaks at about 0.6 GB (only108) and 1.2 GB (full). The table loads in 1-3 s.
"""

import argparse
import sys
import time
from pathlib import Path

from hnas.benchmarks.nb101 import naslib, official, table_file
from hnas.benchmarks.nb101.checksum import BACKEND
from hnas.benchmarks.nb101.schema import NUM_CELLS
from hnas.errors import HnasError


def _parser():
    parser = argparse.ArgumentParser(
        prog="hnas-nb101-convert",
        description="Convert the official NAS-Bench-101 .tfrecord (or NASLib's pickle) into the compact NB101 table.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--tfrecord", metavar="FILE", help="nasbench_only108.tfrecord or nasbench_full.tfrecord")
    source.add_argument("--naslib-pkl", metavar="FILE", help="NASLib's pickled NB101 data (needs --trust-pickle)")
    parser.add_argument("--out", required=True, metavar="NPZ", help="where to write the table (.npz)")
    parser.add_argument("--sha256", action="store_true", help="first check the file against the official SHA-256")
    parser.add_argument("--no-check-data", action="store_true",
                        help="skip the payload checksums (faster without a C CRC32C package; "
                             "the length checksums are still checked)")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="let --naslib-pkl unpickle the file (unpickling can run code: only for files you trust)")
    return parser


def main(argv=None):
    parser = _parser()
    args = parser.parse_args(argv)
    if args.naslib_pkl and (args.sha256 or args.no_check_data):
        parser.error("--sha256 and --no-check-data apply to --tfrecord only")
    try:
        if args.tfrecord:
            if args.sha256:
                print(f"{args.tfrecord} is the official {official.check_sha256(args.tfrecord)} (SHA-256 matches)")
            checks = "length checksums only" if args.no_check_data else f"all checksums, CRC32C in {BACKEND}"
            print(f"reading {args.tfrecord} ({checks})")
            table = official.table_from_tfrecord(args.tfrecord, check_data=not args.no_check_data)
        else:
            table = naslib.table_from_naslib_pickle(args.naslib_pkl, trust_pickle=args.trust_pickle)
        out = table_file.save_table(table, args.out)
        start = time.perf_counter()
        written = table_file.load_table(out)  # read it back: what we wrote must pass the reader's checks
        seconds = time.perf_counter() - start
    except HnasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    size = Path(out).stat().st_size
    print(f"wrote {len(written)} cells with results after {', '.join(map(str, written.epochs))} epochs to {out} "
          f"({size:,} bytes; it loads in {seconds:.2f} s)")
    if written.partial:
        print(f"note: a partial table ({len(written)} of the official space's {NUM_CELLS:,} cells)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
