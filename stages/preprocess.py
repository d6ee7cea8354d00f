"""Stage preprocess: parse the IDX files, split train/validation (stratified, seeded), add the
web page's feedback digits (a split of their own, or folded into training), write uint8 arrays."""

from mnist_cnn import config, data, feedback, figures
from mnist_cnn.atomic import atomic_dir
from mnist_cnn.entrypoint import run_main, stage_parser
from mnist_cnn.tracking.runs import stage_run


def main() -> None:
    paths = {
        "--raw-dir": "the four IDX .gz files",
        "--feedback-dir": "digits corrected on the web page, <label>/*.png",
        "--out-dir": "folder for {train,val,test,feedback}.npz",
    }
    args = stage_parser(__doc__, paths).parse_args()
    params = config.load_params(args.params, args.overrides)
    full_train = data.load_idx_pair(args.raw_dir, "train", params.data.sha256)
    test = data.load_idx_pair(args.raw_dir, "t10k", params.data.sha256)
    train, val = data.stratified_split(full_train, params.data.val_fraction, params.data.split_seed)
    train, corrected = feedback.split(args.feedback_dir, train, params.data.feedback_use)
    splits = {"train": train, "val": val, "test": test, data.FEEDBACK: corrected}

    root = config.project_root()
    with stage_run("preprocess", params.tracking, root) as run:
        run.log_params(
            {
                "data.val_fraction": params.data.val_fraction,
                "data.split_seed": params.data.split_seed,
                "data.feedback_use": params.data.feedback_use,
            }
        )
        with atomic_dir(args.out_dir) as tmp:
            for name, split in splits.items():
                data.save_split(tmp / f"{name}.npz", split)
            data.write_manifest(tmp)
        shown = {name: split for name, split in splits.items() if len(split) or name in data.SPLITS}
        counts = {name: split.class_counts() for name, split in shown.items()}
        run.log_table(
            [{"digit": d, **{name: counts[name][d] for name in shown}} for d in range(data.NUM_CLASSES)],
            "data/class_counts.json",
        )
        run.log_metrics({f"{name}_images": len(split) for name, split in splits.items()})
        run.log_figure(figures.class_counts(counts), "data/class_counts.png")
        run.log_figure(figures.training_samples(train.x, train.y), "data/samples.png")
        run.set_tags({f"data.sha256.{k}": v for k, v in data.processed_checksums(args.out_dir).items()})
        line = ", ".join(f"{name}: {len(split)} images" for name, split in shown.items())
        run.note(f"preprocess: {line}")
        print(line)


if __name__ == "__main__":
    run_main(main)
