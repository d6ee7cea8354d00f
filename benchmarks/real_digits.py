"""Real digits from outside MNIST, calibration and "not sure": one model, measured as the evaluate
stage measures it, on data it never trained on.

Prints MNIST test accuracy; USPS accuracy in every rendering (each digit encoded as a user's file
and read through `images.prepare`); expected calibration error before and after the model's
temperature on MNIST test and USPS; and the share answered "not sure" of MNIST test, USPS and a
generated non-digit set training never saw. Usage (from the project root):

    python benchmarks/real_digits.py --model models/model.keras --mnist /path/to/mnist --usps /path/to/usps
        [--usps-file zip.train] [--nondigits 2000] [--json out.json]

Choose preprocessing on `--usps-file zip.train`; report on zip.test (the default).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="a .keras file (its calibration record inside)")
    parser.add_argument(
        "--mnist",
        default=os.environ.get("MNIST_MIRROR"),
        required=not os.environ.get("MNIST_MIRROR"),
        help="folder of the MNIST IDX .gz files (default: $MNIST_MIRROR)",
    )
    parser.add_argument(
        "--usps",
        default=os.environ.get("USPS_MIRROR"),
        required=not os.environ.get("USPS_MIRROR"),
        help="folder of zip.test.gz / zip.train.gz (default: $USPS_MIRROR)",
    )
    parser.add_argument("--usps-file", default="zip.test", choices=["zip.test", "zip.train"])
    parser.add_argument("--nondigits", type=int, default=2000, help="held-out generated non-digits (default 2000)")
    parser.add_argument("--bins", type=int, default=15)
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args()

    import keras

    from mnist_cnn import data, evaluation, nondigits, usps
    from mnist_runtime import calibration

    model = keras.saving.load_model(args.model, compile=False, safe_mode=True)
    record = calibration.read(args.model)
    test = data.load_idx_pair(Path(args.mnist), "t10k")
    start = time.perf_counter()
    ink, labels = usps.load(Path(args.usps) / f"{args.usps_file}.gz")
    renderings = usps.prepared(ink, labels)
    prepare_s = time.perf_counter() - start

    proba = evaluation.predict_proba(model, test.x)
    figures = {"test_accuracy": float((proba.argmax(axis=1) == test.y).mean()),
               **evaluation.calibration_metrics("test", proba, test.y, record, args.bins)}  # fmt: skip
    real = evaluation.real_digits(model, renderings, record, args.bins)
    figures.update(real.metrics)
    figures.update(evaluation.nondigit_metrics(model, nondigits.generate(args.nondigits, 2024, "test"), record))
    figures.update(temperature=record.temperature, abstain_threshold=record.abstain_below)

    print(
        f"model {args.model} on {cpu_name()}; USPS {args.usps_file}: {len(labels)} digits x {len(renderings)} renderings "
        f"prepared in {prepare_s:.0f} s"
    )
    print(f'temperature {record.temperature:.3f}, "not sure" below confidence {record.abstain_below:.3f}\n')
    print(f"{'set':<28}{'accuracy':>10}{'not sure':>10}{'ECE before':>12}{'ECE after':>11}")
    print(
        f"{'MNIST test':<28}{figures['test_accuracy']:>10.2%}{figures['test_not_sure']:>10.2%}"
        f"{figures['test_ece_uncalibrated']:>12.2%}{figures['test_ece']:>11.2%}"
    )
    print(
        f"{'USPS, all renderings':<28}{figures['usps_accuracy']:>10.2%}{figures['usps_not_sure']:>10.2%}"
        f"{figures['usps_ece_uncalibrated']:>12.2%}{figures['usps_ece']:>11.2%}"
    )
    for name in renderings:
        print(f"{'  USPS ' + name:<28}{figures['usps_accuracy_' + name]:>10.2%}")
    print(f"{'non-digits (held out)':<28}{'':>10}{figures['nondigits_not_sure']:>10.2%}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
