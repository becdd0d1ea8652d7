"""Convert official NAS-Bench-201 / NATS-Bench files into the compact table (docs/benchmark-table.md).

    hnas-nb201-convert --nats NATS-tss-v1_0-3ffb9-simple --out nb201.csv
    hnas-nb201-convert --nb201-pth NAS-Bench-201-v1_1-096897.pth --out nb201.csv
    python -m hnas.benchmarks.nb201.convert --nats <folder> --indices 0,11,284 --out part.csv

Only the architectures the official files hold are written. A table with fewer than 15,625 rows is a partial
table: `load_table(path, partial=True)` reads it; the default `load_table` refuses it, so that a search never
runs on a partial space by mistake.
"""

import argparse
import logging
import sys

from hnas.benchmarks.nb201 import official, table
from hnas.errors import HnasError


def _indices(text):
    try:
        return sorted({int(part) for part in text.split(",") if part.strip()})
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers such as 0,11,284, got {text!r}")


def _parser():
    parser = argparse.ArgumentParser(
        prog="hnas-nb201-convert",
        description="Convert official NATS-Bench topology / NAS-Bench-201 files into the compact NB201 table CSV.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--nats", metavar="PATH", help="NATS-tss-v1_0-3ffb9-simple folder, or the .pickle.pbz2 file")
    source.add_argument("--nb201-pth", metavar="FILE", help="NAS-Bench-201 .pth file (v1_0 or v1_1)")
    parser.add_argument("--out", required=True, metavar="CSV", help="where to write the compact table")
    parser.add_argument(
        "--indices", type=_indices, metavar="I,J,...", help="convert only these indices (default: all the files hold)"
    )
    parser.add_argument(
        "--trust-pickle",
        action="store_true",
        help="load a .pth file with full pickle (it can run code: only for files you trust)",
    )
    return parser


def main(argv=None):
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.nats:
            frame = official.read_nats(args.nats, args.indices)
        else:
            frame = official.read_nb201_pth(args.nb201_pth, args.indices, trust_pickle=args.trust_pickle)
        out = table.write_table(frame, args.out)
        partial = len(frame) != table.NUM_ARCHS
        written = table.load_table(out, partial=partial)  # read it back: what we wrote must validate
    except HnasError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"wrote {len(written)} architectures to {out}")
    if partial:
        print(f"partial table ({len(written)} of {table.NUM_ARCHS}): load it with load_table(path, partial=True)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
