"""Stage preprocess: parse the IDX files, split train/validation (stratified, seeded), write uint8 arrays."""

import mlflow

from mnist_cnn import config, data, figures, tracking
from mnist_cnn.atomic import atomic_dir
from mnist_cnn.entrypoint import run_main, stage_parser


def main() -> None:
    args = stage_parser(__doc__, {"--raw-dir": "the four IDX .gz files", "--out-dir": "folder for {train,val,test}.npz"}).parse_args()
    params = config.load_params(args.params, args.overrides)
    full_train = data.load_idx_pair(args.raw_dir, "train", params.data.sha256)
    test = data.load_idx_pair(args.raw_dir, "t10k", params.data.sha256)
    train, val = data.stratified_split(full_train, params.data.val_fraction, params.data.split_seed)
    splits = {"train": train, "val": val, "test": test}

    root = config.project_root()
    experiment = tracking.configure(params.tracking, root)
    with tracking.stage_run("preprocess", experiment, root):
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
        tracking.log_figure(figures.training_samples(train.x, train.y), "data/samples.png")
        mlflow.set_tags({f"data.sha256.{k}": v for k, v in data.processed_checksums(args.out_dir).items()})
        line = ", ".join(f"{name}: {len(split)} images" for name, split in splits.items())
        mlflow.set_tag(tracking.TAG_NOTE, f"preprocess: {line}")
        print(line)


if __name__ == "__main__":
    run_main(main)
