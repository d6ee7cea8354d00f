"""Where a training step's time goes: TensorFlow's profiler over steps of a preset's training graph
(augmentation, network, loss and optimizer, the same precision policy as `dvc repro`), on random
batches, summed by layer and by forward / backward pass.

The times are the ops' own (self) times summed over the machine's threads, per step; they add up
to more than the step's wall time where ops run side by side. Wall time and images/s are printed
beside them. Needs xprof (`pip install -e ".[profile]"`), which turns the profiler's trace into op
statistics; `--trace-dir` keeps the trace for `xprof` or TensorBoard's profile tab.

    python benchmarks/step_profile.py [--preset accurate] [--set train.batch_size=256] [--steps 30]
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OPTIMIZER = "optimizer"
OTHER = "(input, loss, metrics)"


def _sections(preset: str | None, overrides: list[str]):
    from mnist_cnn import config, presets

    if preset:
        return presets.load(preset, overrides)
    params = config.load_params(ROOT / "params.yaml", overrides)
    return params.model, params.train


def op_stats(trace_dir: Path) -> list[dict]:
    """framework_op_stats of the newest trace under `trace_dir`: one dict per op (name, type, self
    time in microseconds)."""
    try:
        from xprof.convert import raw_to_tool_data
    except ImportError:
        sys.exit('error: reading the trace needs xprof: pip install -e ".[profile]" (or pip install xprof)')
    planes = sorted(trace_dir.rglob("*.xplane.pb"), key=lambda p: p.stat().st_mtime)
    if not planes:
        sys.exit(f"error: the profiler wrote no trace under {trace_dir}")
    data, _ = raw_to_tool_data.xspace_to_tool_data([str(planes[-1])], "framework_op_stats", {})
    table = json.loads(data)[0]
    cols = [c["id"] for c in table["cols"]]
    rows = [dict(zip(cols, ((cell or {}).get("v") for cell in row["c"]), strict=True)) for row in table["rows"]]
    return [
        {"name": r["operation"], "type": r["type"], "self_us": r["total_self_time"]}
        for r in rows
        if r["type"] != "IDLE"
    ]


def attribute(op_name: str, layers: set[str], optimizer: str) -> tuple[str, str]:
    """(layer, pass) of an op from its name scope: `.../gradient_tape/.../block1_conv2_1/...` is
    block1_conv2's backward pass; ops under the optimizer's scope are its update."""
    parts = op_name.split("/")
    scopes = [re.sub(r"_\d+$", "", part) for part in parts]
    inner = [scope for scope in scopes if scope in layers]
    if inner:  # the deepest: a layer of the network, not the network itself
        return inner[-1], "backward" if "gradient_tape" in parts else "forward"
    if optimizer in scopes:
        return OPTIMIZER, "update"
    return OTHER, ""


def summarize(ops: list[dict], layers: list[str], optimizer: str, steps: int) -> tuple[dict, collections.Counter]:
    """Milliseconds per step by layer (forward, backward) and by op type."""
    known = set(layers)
    by_layer: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    by_type: collections.Counter = collections.Counter()
    for op in ops:
        layer, phase = attribute(op["name"], known, optimizer)
        ms = op["self_us"] / 1000.0 / steps
        by_layer[layer][phase or "all"] += ms
        by_type[f"{phase or 'other'}: {op['type'].removeprefix('_Mkl').removeprefix('Native')}"] += ms
    return by_layer, by_type


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", help="a preset of presets/ (default: params.yaml's model and train)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=30, help="profiled steps (after 5 of warm-up)")
    parser.add_argument("--top", type=int, default=12, help="op types listed")
    parser.add_argument("--trace-dir", type=Path, help="keep the trace here (default: a temporary folder)")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error("--steps must be at least 1")

    import keras
    import numpy as np
    import tensorflow as tf

    from mnist_cnn import training
    from mnist_cnn.model import INPUT_SHAPE

    model_params, train_params = _sections(args.preset, args.overrides)
    batch = train_params.batch_size
    fitted, network, _ = training.training_graph(model_params, train_params, args.steps)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch * args.steps, *INPUT_SHAPE), dtype=np.uint8)
    y = training.encode_labels(rng.integers(0, 10, batch * args.steps), train_params)
    fitted.fit(x[: 5 * batch], y[: 5 * batch], batch_size=batch, epochs=1, verbose=0)

    with tempfile.TemporaryDirectory() as tmp:
        trace_dir = args.trace_dir or Path(tmp)
        tf.profiler.experimental.start(str(trace_dir))
        start = time.perf_counter()
        fitted.fit(x, y, batch_size=batch, epochs=1, verbose=0)
        wall = time.perf_counter() - start
        tf.profiler.experimental.stop()
        ops = op_stats(trace_dir)

    outer = [] if fitted is network else [layer.name for layer in fitted.layers if layer is not network]
    layers = list(dict.fromkeys(outer + [layer.name for layer in network.layers]))
    optimizer = re.sub(r"_\d+$", "", fitted.optimizer.name)
    by_layer, by_type = summarize(ops, layers, optimizer, args.steps)
    total = sum(sum(c.values()) for c in by_layer.values())
    policy = keras.mixed_precision.global_policy().name
    print(
        f"{args.preset or 'params.yaml'}: batch {batch}, {policy}, {args.steps} steps: "
        f"{1000 * wall / args.steps:.1f} ms a step (wall), {batch * args.steps / wall:,.0f} images/s; "
        f"ops' own time {total:.1f} ms a step over all threads"
    )
    print(f"\n{'layer':<24}{'forward ms':>11}{'backward ms':>12}{'share':>7}")
    for name in [name for name in (*layers, OPTIMIZER, OTHER) if name in by_layer]:
        c = by_layer[name]
        forward, backward = c["forward"] + c["update"] + c["all"], c["backward"]
        print(f"{name:<24}{forward:>11.2f}{backward:>12.2f}{(forward + backward) / total:>7.1%}")
    print(f"\n{'op type (pass)':<48}{'ms':>7}{'share':>7}")
    for name, ms in by_type.most_common(args.top):
        print(f"{name:<48}{ms:>7.2f}{ms / total:>7.1%}")


if __name__ == "__main__":
    main()
