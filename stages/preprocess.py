"""Stage preprocess: parse the IDX files, split train/validation (stratified, seeded), write uint8 arrays."""

import argparse
from pathlib import Path

from mnist_cnn.cli import add_params_args, run_main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--raw-dir", type=Path, default=Path("data/raw"))
    parser.add_argument("--out-dir", type=Path, default=Path("data/processed"))
    add_params_args(parser)
    args = parser.parse_args()

    from mnist_cnn import config, data, figures, tracking
    from mnist_cnn.atomic import atomic_dir

    params = config.load_params(args.params, args.overrides)
    full_train = data.load_idx_pair(args.raw_dir, "train", params.data.sha256)
    test = data.load_idx_pair(args.raw_dir, "t10k", params.data.sha256)
    train, val = data.stratified_split(full_train, params.data.val_fraction, params.data.split_seed)
    splits = {"train": train, "val": val, "test": test}

    root = tracking.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("preprocess", experiment, root):
        import mlflow

        tracking.log_params({"data.val_fraction": params.data.val_fraction, "data.split_seed": params.data.split_seed})
        with atomic_dir(args.out_dir) as tmp:
            for name, split in splits.items():
                data.save_split(tmp / f"{name}.npz", split)
            data.write_manifest(tmp)
        counts = {name: split.class_counts() for name, split in splits.items()}
        tracking.log_table(
            [{"digit": d, **{name: counts[name][d] for name in splits}} for d in range(data.NUM_CLASSES)],
            "data/class_counts.json",
        )
        mlflow.log_metrics({f"{name}_images": float(len(split)) for name, split in splits.items()})
        tracking.log_figure(figures.class_counts(counts), "data/class_counts.png")
        n = min(40, len(train))
        tracking.log_figure(
            figures.image_grid(train.x[:n], [f"label {y}" for y in train.y[:n]], "Training samples"),
            "data/samples.png",
        )
        mlflow.set_tags({f"data.sha256.{k}": v for k, v in data.processed_checksums(args.out_dir).items()})
        print(", ".join(f"{name}: {len(split)} images" for name, split in splits.items()))


if __name__ == "__main__":
    run_main(main)
