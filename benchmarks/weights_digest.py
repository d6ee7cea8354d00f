"""The trained weights' SHA-256 of `dvc repro train` on the MNIST subset (the default params, one
epoch), in a throwaway copy of a source tree: a refactoring that must not change behaviour keeps
it bit-identical. Compare two commits with a worktree:

    git worktree add /tmp/before <commit> && python benchmarks/weights_digest.py /tmp/before
    python benchmarks/weights_digest.py            # this tree (its tracked and untracked files)

The copy runs its own `src/` (PYTHONPATH), not the installed package."""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "tree", nargs="?", type=Path, default=HERE, help="a checkout of this project (default: this one)"
    )
    tree = parser.parse_args().tree.resolve()
    sys.path.insert(0, str(tree / "tests"))
    import helpers
    from usps_fixture import write_usps_fixture

    helpers.ROOT = tree  # copy_project copies this tree
    work = Path(tempfile.mkdtemp(prefix="weights-digest-"))
    usps = work / "usps"
    usps.mkdir()
    sums = write_usps_fixture(usps)
    (usps / "SHA256SUMS").write_text("".join(f"{digest}  {name}\n" for name, digest in sums.items()))
    project = helpers.copy_project(work / "project")

    from mnist_cnn.schema import dump_yaml, read_yaml

    params = read_yaml(project / "params.yaml")
    params["data"]["mirrors"] = [str(helpers.SUBSET)]
    params["data"]["sha256"] = helpers.subset_sha256()
    params["data"]["usps"] = helpers.usps_params(usps)
    params["train"]["epochs"] = 1
    (project / "params.yaml").write_text(dump_yaml(params))
    env = helpers.clean_env(PYTHONPATH=str(project / "src"))
    proc = subprocess.run(["dvc", "repro", "train"], cwd=project, env=env, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stdout[-3000:], proc.stderr[-3000:], file=sys.stderr)
        return 1
    import keras

    model = keras.saving.load_model(project / "models" / "model.keras")
    digest = hashlib.sha256()
    for weight in model.weights:
        digest.update(keras.ops.convert_to_numpy(weight).tobytes())
    print(f"weights sha256 {digest.hexdigest()} ({len(model.weights)} variables) of {tree}; project in {project}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
