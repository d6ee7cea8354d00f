"""Train the presets on full MNIST in one run and compare them.

Each preset trains in its own process (clean TensorFlow state, its own peak RSS) on the same
split, is scored on the 10,000 test images, and the table shows test accuracy, test loss,
training seconds, the ratio to the seed preset's time, images per second and peak RSS. An
accuracy-versus-time plot is saved beside the JSON results.

    MNIST_MIRROR=/path/to/mnist python benchmarks/presets.py [--presets seed fast accurate] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import add_mirror_option

ROOT = Path(__file__).resolve().parents[1]


def prepare_data(mirror: str, work: Path) -> Path:
    from mnist_cnn import config, data, download

    params = config.load_params(ROOT / "params.yaml")
    os.environ["MNIST_MIRROR"] = mirror
    raw = work / "raw"
    download.fetch_all(params.data, raw, progress=False)
    train, val = data.stratified_split(
        data.load_idx_pair(raw, "train"), params.data.val_fraction, params.data.split_seed
    )
    out = work / "processed"
    out.mkdir(parents=True, exist_ok=True)
    for name, split in (("train", train), ("val", val), ("test", data.load_idx_pair(raw, "t10k"))):
        data.save_split(out / f"{name}.npz", split)
    return out


def worker(preset: str, data_dir: Path, result_path: Path, overrides: list[str]) -> None:
    """Train one preset; write its figures as JSON."""
    import resource

    from mnist_cnn import data, evaluation, presets, training
    from mnist_cnn.schema import to_dict

    model_params, train_params = presets.load(preset, overrides)
    train_split, val_split = data.load_split(data_dir, "train"), data.load_split(data_dir, "val")
    test = data.load_split(data_dir, "test")
    with tempfile.TemporaryDirectory() as tmp:
        result = training.train(model_params, train_params, train_split, val_split, Path(tmp), verbose=2)
    proba = evaluation.predict_proba(result.model, test.x)
    metrics = evaluation.evaluate_probabilities(test.y, proba).metrics
    result_path.write_text(
        json.dumps(
            {
                "preset": preset,
                "test_accuracy": metrics["test_accuracy"],
                "test_loss": metrics["test_loss"],
                "train_seconds": result.seconds,
                "images_per_second": result.images_per_second,
                "epochs": len(result.history),
                "best_epoch": result.best_epoch,
                "best_val_accuracy": result.best["val_accuracy"],
                "params": {"model": to_dict(model_params), "train": to_dict(train_params)},
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )


def plot(rows: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    for r in rows:
        ax.scatter(r["train_seconds"], 100 * r["test_accuracy"], s=40)
        ax.annotate(
            r["preset"], (r["train_seconds"], 100 * r["test_accuracy"]), textcoords="offset points", xytext=(5, 5)
        )
    ax.set_xlabel("training seconds (2-core CPU)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("Presets: accuracy versus training time")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["seed", "fast", "accurate"])
    add_mirror_option(parser, usps=False)
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json and the plot")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override applied to every preset")
    parser.add_argument("--worker", nargs=3, metavar=("PRESET", "DATA_DIR", "RESULT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker[0], Path(args.worker[1]), Path(args.worker[2]), args.overrides)
        return

    out = args.out or Path(tempfile.mkdtemp(prefix="mnist-presets-"))
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = prepare_data(str(Path(args.mirror).resolve()), Path(tmp))
        rows = []
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        for preset in args.presets:
            result = Path(tmp) / f"{preset}.json"
            extra = [f"--set={o}" for o in args.overrides]
            start = time.perf_counter()
            cmd = [sys.executable, __file__, *extra, "--worker", preset, str(data_dir), str(result)]
            with open(out / f"{preset}.log", "w") as log:
                subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, check=True)
            row = json.loads(result.read_text())
            row["process_seconds"] = time.perf_counter() - start
            rows.append(row)
            print(f"{preset}: test_accuracy {row['test_accuracy']:.4f} in {row['train_seconds']:.0f}s", flush=True)
    base = next((r["train_seconds"] for r in rows if r["preset"] == "seed"), None)
    print(
        f"\n{'preset':<10}{'test acc':>9}{'test loss':>10}{'train s':>9}{'x seed':>8}{'img/s':>8}{'epochs':>7}{'peak RSS':>10}"
    )
    for r in rows:
        ratio = f"{r['train_seconds'] / base:.2f}" if base else "-"
        print(
            f"{r['preset']:<10}{100 * r['test_accuracy']:>8.2f}%{r['test_loss']:>10.4f}{r['train_seconds']:>9.1f}"
            f"{ratio:>8}{r['images_per_second']:>8.0f}{r['epochs']:>7}{r['peak_rss_mib']:>7.0f} MiB"
        )
    (out / "results.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / "accuracy_vs_time.png")
    print(f"\nresults and plot: {out}")


if __name__ == "__main__":
    main()
