"""Stage download: fetch the four MNIST IDX .gz files from the mirrors and verify their content."""

import argparse
import os
import sys
import time
from pathlib import Path

from mnist_cnn.cli import add_params_args, run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out-dir", type=Path, default=Path("data/raw"))
    add_params_args(parser)
    args = parser.parse_args()

    from mnist_cnn import config, download, tracking
    from mnist_cnn.atomic import atomic_dir

    params = config.load_params(args.params, args.overrides)
    root = tracking.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("download", experiment, root):
        import mlflow

        tracking.log_params(config.flatten(params.data, "data."))
        mlflow.set_tag("mnist_cnn.mirror_env", os.environ.get("MNIST_MIRROR", ""))
        start = time.perf_counter()
        with atomic_dir(args.out_dir) as tmp:
            results = download.fetch_all(params.data, tmp, progress=sys.stderr.isatty())
        seconds = time.perf_counter() - start
        rows = [
            {
                "file": r.name,
                "source": r.mirror,
                "compressed_bytes": r.compressed_bytes,
                "decompressed_bytes": r.decompressed_bytes,
                "sha256": r.sha256,
                "attempts": r.attempts,
                "seconds": round(r.seconds, 3),
            }
            for r in results
        ]
        tracking.log_table(rows, "download/files.json")
        mlflow.log_metrics(
            {
                "download_seconds": seconds,
                "download_bytes": float(sum(r.compressed_bytes for r in results)),
                "download_attempts": float(sum(r.attempts for r in results)),
            }
        )
        for r in results:
            print(f"{r.name}: {r.compressed_bytes} bytes from {r.mirror} (sha256 {r.sha256[:12]}... ok)")


if __name__ == "__main__":
    run_main(main)
