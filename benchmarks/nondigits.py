"""Speed of the non-digit generator (`mnist_cnn.nondigits`) and a look at what it makes.

Times `generate(--n, --seed)` for each split (wall clock and this process's CPU time, which a busy
machine inflates less) and, with `--grid PATH`, saves 100 samples per split (`PATH-train.png`,
`PATH-test.png`, about 17 of each kind, titled with it) to check by eye that none reads as a digit.

    python benchmarks/nondigits.py [--n 6000] [--seed 0] [--grid /tmp/nondigits.png]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def main() -> None:
    from mnist_cnn import figures, nondigits

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=6000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--grid", type=Path, help="save 100 samples per split next to this path")
    args = parser.parse_args()
    for split in nondigits.SPLITS:
        wall, cpu = time.perf_counter(), time.process_time()
        x = nondigits.generate(args.n, args.seed, split)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{split}: {args.n} images in {wall:.1f} s ({cpu:.1f} s CPU), {args.n / wall:.0f} per second")
        if args.grid:
            kinds = nondigits.kinds_of(args.n, args.seed, split)
            each = -(-100 // len(nondigits.KINDS))
            pick = np.concatenate([np.flatnonzero(kinds == k)[:each] for k in range(len(nondigits.KINDS))])[:100]
            fig = figures.image_grid(x[pick], [nondigits.KINDS[k] for k in kinds[pick]], f"non-digits, {split} split")
            path = args.grid.with_name(f"{args.grid.stem}-{split}{args.grid.suffix or '.png'}")
            path.parent.mkdir(parents=True, exist_ok=True)
            fig.savefig(path, dpi=80)
            print(f"  grid: {path}")


if __name__ == "__main__":
    main()
