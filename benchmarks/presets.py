"""The accuracy-cost frontier on full MNIST: the presets, side by side with the seed, and a study's
Pareto front.

Each run trains in its own process (clean TensorFlow state, its own peak RSS) on the same split.
The seed preset runs before and after every other preset (seed, fast, seed, accurate, ... , seed),
so each ratio to the seed divides by the mean of the two seed runs around it, measured in the same
run. For every run: test accuracy, training seconds, that ratio, the fit's images/s (per-epoch
throughput), epochs, parameters, the serving latency of one image (median ms, the saved float32
network) and peak RSS. With --usps, what the evaluate stage measures of honesty, the network
calibrated on the validation split: USPS accuracy over its six renderings, and the share of USPS
digits and of held-out generated non-digits answered "not sure".

`--seeds 1 2` also trains each preset but the seed with those training seeds (`train.seed`), each
interleaved like the rest, and prints the spread of test accuracy over seeds: one training's draw
moves MNIST test accuracy by a few hundredths of a point.

`--front tuning/best_params.yaml` adds a multi-objective study's front: listed as the study
measured it, and with --retrain-front each front trial's values are applied to params.yaml (as
`mnist-cnn tune --apply --pick` would) and trained like a preset. The plot (accuracy versus
training seconds) draws the presets and the front.

Each finished run is appended to `runs.jsonl` in the output folder as it ends; `--report
DIR/runs.jsonl` prints the table of a benchmark that was stopped early and redraws its plot.

    MNIST_MIRROR=/path/to/mnist USPS_MIRROR=/path/to/usps python benchmarks/presets.py \\
        [--presets fast accurate] [--seeds 1 2] [--front tuning/best_params.yaml [--retrain-front]] [--out DIR]
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

from mnist_cnn.atomic import atomic_path
from pipeline import add_mirror_option
from real_digits import cpu_name

ROOT = Path(__file__).resolve().parents[1]
SEED = "seed"
PLOT = "accuracy_vs_time.png"


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


def _sections(name: str, values: dict | None, overrides: list[str]):
    """A preset's model and train sections, or (values) params.yaml's with a front trial's values."""
    from mnist_cnn import config, presets

    if values is None:
        return presets.load(name, overrides)
    params = config.with_values(config.load_params(ROOT / "params.yaml", overrides), values)
    return params.model, params.train


def worker(name: str, data_dir: Path, result_path: Path, overrides: list[str], values: dict | None, usps_dir) -> None:
    """Train one preset (or front trial); write its figures as JSON."""
    import resource

    from mnist_cnn import data, evaluation, nondigits, training, usps
    from mnist_cnn.config import load_params
    from mnist_cnn.schema import to_dict
    from mnist_cnn.tuning.objectives import latency_ms

    model_params, train_params = _sections(name, values, overrides)
    train_split, val_split = data.load_split(data_dir, "train"), data.load_split(data_dir, "val")
    test = data.load_split(data_dir, "test")
    with tempfile.TemporaryDirectory() as tmp:
        result = training.train(model_params, train_params, train_split, val_split, Path(tmp), verbose=2)
    proba = evaluation.predict_proba(result.model, test.x)
    metrics = evaluation.evaluate_probabilities(test.y, proba).metrics
    row = {
        "name": name,
        "test_accuracy": metrics["test_accuracy"],
        "test_loss": metrics["test_loss"],
        "train_seconds": result.seconds,
        "images_per_second": result.images_per_second,
        "epoch_seconds": sorted(r["seconds"] for r in result.history)[len(result.history) // 2],  # the median
        "epochs": len(result.history),
        "train_seed": train_params.seed,
        "best_val_accuracy": result.best["val_accuracy"],
        "parameters": result.model.count_params(),
        "latency_ms": latency_ms(result.model, calls=200),
        "params": {"model": to_dict(model_params), "train": to_dict(train_params)},
    }
    if usps_dir:
        params = load_params(ROOT / "params.yaml")  # calibration and evaluate: as the pipeline measures
        network, record, _ = training.calibrate(result.model, val_split, params.calibration)
        ink, labels = usps.load(Path(usps_dir) / f"{usps.TEST}.gz")
        real = evaluation.real_digits(network, usps.prepared(ink, labels), record, bins=params.calibration.bins)
        row.update(
            {
                k: v
                for k, v in real.metrics.items()
                if k.startswith("usps_accuracy") or k in ("usps_ece", "usps_not_sure")
            }
        )
        held_out = nondigits.generate(params.evaluate.nondigits, nondigits.HELD_OUT_SEED, "test")
        row.update(evaluation.nondigit_metrics(network, held_out, record))
    row["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result_path.write_text(json.dumps(row))


def plot(rows: list[dict], front: list[dict], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    by_name: dict[str, list[dict]] = {}
    for r in rows:
        if not r["name"].startswith("trial "):
            by_name.setdefault(r["name"], []).append(r)
    for name, same in by_name.items():  # a preset's mean, and its runs (training seeds, repeats) as dots
        x = sum(r["train_seconds"] for r in same) / len(same)
        y = 100 * sum(r["test_accuracy"] for r in same) / len(same)
        if len(same) > 1:
            ax.scatter([r["train_seconds"] for r in same], [100 * r["test_accuracy"] for r in same], s=12,
                       color="tab:blue", alpha=0.35, linewidths=0)  # fmt: skip
        ax.scatter(x, y, s=40, color="tab:blue")
        label = name if len(same) == 1 else f"{name} (mean of {len(same)})"
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(5, 5))
    trained = sorted((r for r in rows if r["name"].startswith("trial ")), key=lambda r: r["train_seconds"])
    if trained:
        xs, ys = [r["train_seconds"] for r in trained], [100 * r["test_accuracy"] for r in trained]
        ax.plot(xs, ys, "o--", color="tab:orange", label="study front, trained on full MNIST")
        for r in trained:
            ax.annotate(r["name"], (r["train_seconds"], 100 * r["test_accuracy"]), textcoords="offset points",
                        xytext=(5, -12), color="tab:orange")  # fmt: skip
    if any(len(same) > 1 for same in by_name.values()):
        ax.text(0.98, 0.02, "small dots: the single runs", transform=ax.transAxes, ha="right", color="tab:blue")
    if front and not trained:
        ax.text(0.02, 0.02, f"study front: {len(front)} trials (see results.json)", transform=ax.transAxes)
    ax.margins(x=0.15, y=0.1)  # room for the labels beside the points at the edges
    ax.set_xlabel(f"training seconds ({cpu_name()}, {os.cpu_count()} CPUs)")
    ax.set_ylabel("MNIST test accuracy (%)")
    ax.set_title("Accuracy versus training time")
    ax.grid(alpha=0.3)
    if trained:
        ax.legend(loc="lower right")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")


Job = tuple[str, dict | None, int | None]  # name, a front trial's values (None: a preset), train.seed (None: its own)


def _order(jobs: list[Job]) -> list[Job]:
    """The seed around every other run: seed, A, seed, B, seed."""
    order: list[Job] = [(SEED, None, None)]
    for job in jobs:
        if job[0] != SEED:
            order += [job, (SEED, None, None)]
    return order


def _run(job: Job, data_dir: Path, work: Path, out: Path, overrides: list[str], usps=None) -> dict:
    name, values, seed = job
    label = name.replace(" ", "-")
    result = work / f"{label}-{time.monotonic_ns()}.json"
    if seed is not None:
        overrides = [*overrides, f"train.seed={seed}"]
    extra = [f"--set={o}" for o in overrides]
    cmd = [sys.executable, __file__, *extra, "--worker", name, str(data_dir), str(result)]
    if values is not None:
        cmd += ["--values", json.dumps(values)]
    if usps:
        cmd += ["--usps", str(usps)]
    with open(out / f"{label}.log", "a") as log:
        subprocess.run(
            cmd, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}, stdout=log, stderr=subprocess.STDOUT, check=True
        )
    return json.loads(result.read_text())


def _ratios(runs: list[dict]) -> None:
    """Each non-seed run's time over the mean of the seed runs just before and after it: wall time
    (`x_seed`), and median epoch x epochs (`x_seed_epochs`, deaf to a burst of load on the machine)."""
    for i, r in enumerate(runs):
        around = [runs[j] for j in (i - 1, i + 1) if 0 <= j < len(runs) and runs[j]["name"] == SEED]
        if not around or r["name"] == SEED:
            r["x_seed"] = r["x_seed_epochs"] = None
            continue
        r["x_seed"] = r["train_seconds"] / (sum(s["train_seconds"] for s in around) / len(around))
        typical = sum(s["epoch_seconds"] * s["epochs"] for s in around) / len(around)
        r["x_seed_epochs"] = r["epoch_seconds"] * r["epochs"] / typical


def table(rows: list[dict]) -> str:
    usps = any("usps_accuracy" in r for r in rows)
    head = (
        f"{'run':<14}{'seed':>5}{'test acc':>9}{'train s':>9}{'x seed':>8}{'epoch s':>9}{'x seed':>8}{'img/s':>8}{'epochs':>7}"
        f"{'params':>9}{'1-img ms':>9}"
    )
    lines = [
        head + ("   USPS  not sure: USPS, non-digits" if usps else ""),
        f"{'':<32}(wall time){'':<5}(median epoch)",
    ]
    for r in rows:
        base = "base" if r["name"] == SEED else "-"
        wall = f"{r['x_seed']:.2f}" if r.get("x_seed") else base
        typical = f"{r['x_seed_epochs']:.2f}" if r.get("x_seed_epochs") else base
        line = (
            f"{r['name']:<14}{r.get('train_seed', ''):>5}{100 * r['test_accuracy']:>8.2f}%"
            f"{r['train_seconds']:>9.1f}{wall:>8}{r['epoch_seconds']:>9.1f}"
            f"{typical:>8}{r['images_per_second']:>8.0f}{r['epochs']:>7}{r['parameters']:>9,}{r['latency_ms']:>9.2f}"
        )
        if "usps_accuracy" in r:
            line += f"  {r['usps_accuracy']:.2%}  {r['usps_not_sure']:>15.2%}  {r['nondigits_not_sure']:>10.2%}"
        lines.append(line)
    return "\n".join(lines)


def spread(rows: list[dict]) -> str:
    """Test accuracy over the training seeds of each preset trained with more than one."""
    lines = []
    for name in dict.fromkeys(r["name"] for r in rows if r["name"] != SEED):
        acc = {r["train_seed"]: 100 * r["test_accuracy"] for r in rows if r["name"] == name}
        if len(acc) > 1:
            each = ", ".join(f"{a:.2f}% (seed {s})" for s, a in acc.items())
            lines.append(f"{name}: mean {sum(acc.values()) / len(acc):.3f}% over {len(acc)} training seeds: {each}")
    return "\n".join(lines)


def report(runs: list[dict]) -> None:
    """Print the runs' ratios to the seed, their table and each preset's spread over seeds."""
    _ratios(runs)
    seeds = [r["train_seconds"] for r in runs if r["name"] == SEED]
    print(f"\nseed preset: {len(seeds)} runs, {', '.join(f'{s:.1f}' for s in seeds)} s")
    print(table(runs))
    print(spread(runs))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--presets", nargs="+", default=["fast", "accurate"], help="besides the seed (it runs around each)"
    )
    add_mirror_option(parser, usps=False, required=False)  # --report needs none
    parser.add_argument("--usps", default=os.environ.get("USPS_MIRROR"), help="USPS folder: adds USPS accuracy")
    parser.add_argument("--front", type=Path, help="a multi-objective study's best params file")
    parser.add_argument("--retrain-front", action="store_true", help="train each front trial on full MNIST too")
    parser.add_argument("--out", type=Path, default=None, help="folder for results.json, logs and the plot")
    parser.add_argument(
        "--seeds", nargs="+", type=int, default=[], help="more training seeds for each preset but the seed: its spread"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="override applied to every run")
    parser.add_argument(
        "--report",
        type=Path,
        help="print the table of a (stopped) benchmark's runs.jsonl and redraw its plot; train nothing",
    )
    parser.add_argument("--worker", nargs=3, metavar=("NAME", "DATA_DIR", "RESULT"), help=argparse.SUPPRESS)
    parser.add_argument("--values", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        values = json.loads(args.values) if args.values else None
        worker(args.worker[0], Path(args.worker[1]), Path(args.worker[2]), args.overrides, values, args.usps)
        return
    if args.report:
        runs = [json.loads(line) for line in args.report.read_text().splitlines() if line.strip()]
        report(runs)
        plot(runs, [], args.report.parent / PLOT)
        print(f"\nplot: {args.report.parent / PLOT}")
        return
    if not args.mirror:
        parser.error("--mirror is required (or set $MNIST_MIRROR)")

    front = []
    if args.front:
        from mnist_cnn.schema import read_yaml

        front = read_yaml(args.front, what="best params file").get("front") or []
        if not front:
            parser.error(f"{args.front} has no front: it is a single-objective study's")
    out = args.out or Path(tempfile.mkdtemp(prefix="mnist-frontier-"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "runs.jsonl").write_text("")
    print(f"{cpu_name()}, {os.cpu_count()} CPUs; logs in {out}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = prepare_data(str(Path(args.mirror).resolve()), Path(tmp))
        jobs: list[Job] = [(name, None, None) for name in args.presets]
        jobs += [(name, None, seed) for seed in args.seeds for name in args.presets if name != SEED]
        if args.retrain_front:
            jobs += [(f"trial {entry['trial']}", entry["params"], None) for entry in front]
        runs = []
        for job in _order(jobs):
            r = _run(job, data_dir, Path(tmp), out, args.overrides, args.usps)
            runs.append(r)
            with open(out / "runs.jsonl", "a") as fh:  # a stopped benchmark keeps the runs it finished
                fh.write(json.dumps(r) + "\n")
            print(
                f"{r['name']} (train.seed {r['train_seed']}): test_accuracy {r['test_accuracy']:.4f} in {r['train_seconds']:.0f}s",
                flush=True,
            )
    report(runs)
    if front:
        names = [k for k in front[0] if k not in ("trial", "params")]
        print(f"\nstudy front ({args.front}; validation accuracy and costs as the study measured them)")
        print(f"{'trial':>6}" + "".join(f"{n:>16}" for n in names))
        for entry in front:
            print(f"{entry['trial']:>6}" + "".join(f"{entry[n]:>16.4g}" for n in names))
    (out / "results.json").write_text(json.dumps({"cpu": cpu_name(), "runs": runs, "front": front}, indent=2))
    plot(runs, front, out / PLOT)
    print(f"\nresults and plot: {out}")


if __name__ == "__main__":
    main()
