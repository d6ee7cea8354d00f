"""Stage download: fetch the four MNIST IDX .gz files and USPS's zip.train.gz and zip.test.gz from
the mirrors and verify their content."""

import os
import sys
import time

from mnist_cnn import config, download
from mnist_cnn.atomic import atomic_dir
from mnist_cnn.entrypoint import run_main, stage_parser
from mnist_cnn.schema import flatten
from mnist_cnn.tracking.runs import stage_run


def main() -> None:
    paths = {
        "--out-dir": "folder for the four MNIST .gz files",
        "--usps-dir": "folder for zip.train.gz and zip.test.gz",
    }
    args = stage_parser(__doc__, paths).parse_args()
    params = config.load_params(args.params, args.overrides)
    root = config.project_root()
    with stage_run("download", params.tracking, root) as run:
        run.log_params(flatten(params.data, "data."))
        run.set_tags({
            "mnist_cnn.mirror_env": os.environ.get(download.MNIST.env_var, ""),
            "mnist_cnn.usps_mirror_env": os.environ.get(download.USPS.env_var, ""),
        })  # fmt: skip
        start = time.perf_counter()
        progress = sys.stderr.isatty()
        with atomic_dir(args.out_dir) as mnist_tmp, atomic_dir(args.usps_dir) as usps_tmp:
            mnist = download.fetch_all(params.data, mnist_tmp, progress=progress)
            usps = download.fetch_usps(params.data, usps_tmp, progress=progress)
        results = mnist + usps
        run.log_table([r.row() for r in results], "download/files.json")
        run.log_metrics(
            {
                "download_seconds": time.perf_counter() - start,
                "download_bytes": sum(r.compressed_bytes for r in results),
                "download_attempts": sum(r.attempts for r in results),
            }
        )
        note = f"download: {len(results)} files verified, MNIST from {mnist[0].mirror}, USPS from {usps[0].mirror}"
        run.note(note)
        for r in results:
            print(f"{r.name}: {r.compressed_bytes} bytes from {r.mirror} (sha256 {r.sha256[:12]}... ok)")


if __name__ == "__main__":
    run_main(main)
