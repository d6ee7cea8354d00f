"""Stage download: fetch the four MNIST IDX .gz files from the mirrors and verify their content."""

import os
import sys
import time

import mlflow

from mnist_cnn import config, download, tracking
from mnist_cnn.atomic import atomic_dir
from mnist_cnn.entrypoint import run_main, stage_parser
from mnist_cnn.schema import flatten


def main() -> None:
    args = stage_parser(__doc__, {"--out-dir": "folder for the four .gz files"}).parse_args()
    params = config.load_params(args.params, args.overrides)
    root = config.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("download", experiment, root):
        tracking.log_params(flatten(params.data, "data."))
        mlflow.set_tag("mnist_cnn.mirror_env", os.environ.get("MNIST_MIRROR", ""))
        start = time.perf_counter()
        with atomic_dir(args.out_dir) as tmp:
            results = download.fetch_all(params.data, tmp, progress=sys.stderr.isatty())
        tracking.log_table([r.row() for r in results], "download/files.json")
        mlflow.log_metrics(
            {
                "download_seconds": time.perf_counter() - start,
                "download_bytes": float(sum(r.compressed_bytes for r in results)),
                "download_attempts": float(sum(r.attempts for r in results)),
            }
        )
        mlflow.set_tag(tracking.TAG_NOTE, f"download: {len(results)} files verified, from {results[0].mirror}")
        for r in results:
            print(f"{r.name}: {r.compressed_bytes} bytes from {r.mirror} (sha256 {r.sha256[:12]}... ok)")


if __name__ == "__main__":
    run_main(main)
