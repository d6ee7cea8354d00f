"""params.yaml loading and validation: every bad key, type or value is an error naming the key."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from mnist_cnn import config
from mnist_cnn.config import (
    MNIST_FILES,
    DataParams,
    Params,
    apply_overrides,
    load_params,
)
from mnist_cnn.errors import ConfigError
from mnist_cnn.schema import dump_yaml, flatten, from_mapping, parse_yaml, read_yaml, replace, to_dict

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"


@pytest.fixture(scope="module")
def raw() -> dict:
    """The repository's params.yaml as a plain dict (tests deep-copy it before changing it)."""
    return read_yaml(PARAMS)


def build(raw: dict, *overrides: str) -> Params:
    return from_mapping(Params, apply_overrides(raw, list(overrides)))


def write_params(path: Path, data: dict) -> Path:
    path.write_text(dump_yaml(data))
    return path


# --- the real params.yaml -------------------------------------------------------------------


def test_repository_params_yaml_loads_with_expected_values():
    params = load_params(PARAMS)
    assert isinstance(params, Params)
    assert params.model.filters == (32, 64)
    assert params.model.dense_units == (128,)
    assert params.model.padding == "valid"
    # the default is the `accurate` preset: two convs per block, no batch norm, bfloat16 where native
    assert params.model.batch_norm is False and params.model.convs_per_block == 2
    assert params.train.mixed_precision == "auto"
    assert params.train.optimizer == "adamw"
    assert params.train.epochs == 12
    assert params.train.schedule.name == "onecycle"
    assert params.tune.n_trials == 20 and params.tune.pruner.name == "percentile"
    assert {s.param for s in params.tune.space.values()} >= {
        "model.filters.0",
        "model.filters.1",
        "model.dense_units.0",
        "model.dropout",
        "train.learning_rate",
        "train.batch_size",
    }
    assert params.tune.space["learning_rate"].log is True
    assert params.data.val_fraction == pytest.approx(0.1)
    assert set(params.data.sha256) == set(MNIST_FILES)
    assert len(params.data.mirrors) == 2 and all(m.startswith("https://") for m in params.data.mirrors)
    # ints written in YAML for float fields come back as floats
    assert isinstance(params.data.timeout_s, float)
    assert params.data.timeout_s == 30.0


def test_params_are_frozen():
    params = load_params(PARAMS)
    with pytest.raises(ValidationError, match="frozen"):
        params.train.epochs = 3  # type: ignore[misc]


def test_to_dict_round_trips_through_from_mapping():
    params = load_params(PARAMS)
    plain = to_dict(params)
    assert plain["model"]["filters"] == [32, 64]  # tuples become lists
    assert from_mapping(Params, plain) == params


# --- unknown keys ---------------------------------------------------------------------------


def test_unknown_top_level_key_is_rejected_by_name(raw):
    data = copy.deepcopy(raw)
    data["trian"] = {"epochs": 1}
    with pytest.raises(ConfigError, match=r"unknown key\(s\) trian"):
        from_mapping(Params, data)


def test_unknown_section_key_is_rejected_with_the_valid_keys(raw):
    with pytest.raises(ConfigError) as info:
        build(raw, "train.epoch=2")
    message = str(info.value)
    assert "train.epoch" in message
    assert "valid keys under train" in message and "epochs" in message


def test_unknown_nested_key_is_rejected_with_its_full_dotted_name(raw):
    with pytest.raises(ConfigError, match=r"model\.augment\.foo"):
        build(raw, "model.augment.foo=1")
    with pytest.raises(ConfigError, match=r"train\.schedule\.nmae"):
        build(raw, "train.schedule.nmae=cosine")


def test_unknown_key_in_a_params_file_names_the_file_and_the_key(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["model"]["augment"]["foo"] = 1
    path = write_params(tmp_path / "params.yaml", data)
    with pytest.raises(ConfigError) as info:
        load_params(path)
    assert str(path) in str(info.value)
    assert "model.augment.foo" in str(info.value)


def test_unknown_checksum_file_is_rejected(raw):
    with pytest.raises(ConfigError, match=r"data\.sha256 has unknown files \['train-images'\]"):
        build(raw, "data.sha256.train-images=abc")


# --- wrong types ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.epochs='10'", r"train\.epochs must be an integer, got '10'"),  # string for int
        ("train.epochs=true", r"train\.epochs must be an integer, got True"),  # bool for int
        ("train.epochs=2.5", r"train\.epochs must be an integer, got 2\.5"),
        ("model.filters=32", r"model\.filters must be a list, got int 32"),  # number for list
        ("model.filters=[32, x]", r"model\.filters\[1\] must be an integer, got 'x'"),
        ("model.batch_norm=1", r"model\.batch_norm must be true or false, got 1"),
        ("train.learning_rate='0.01'", r"train\.learning_rate must be a number, got '0\.01'"),
        ("train.learning_rate=false", r"train\.learning_rate must be a number, got False"),
        ("tracking.experiment=7", r"tracking\.experiment must be a string, got 7"),
        ("data.mirrors=https://example.com/", r"data\.mirrors must be a list, got str"),
        ("model.augment=0.1", r"model\.augment must be a mapping, got float"),
        ("data.sha256=[a, b]", r"data\.sha256 must be a mapping, got list"),
    ],
)
def test_wrong_types_are_rejected_naming_the_key(raw, override, message):
    with pytest.raises(ConfigError, match=message):
        build(raw, override)


def test_section_that_is_not_a_mapping_is_rejected(raw):
    data = copy.deepcopy(raw)
    data["train"] = [1, 2]
    with pytest.raises(ConfigError, match=r"^train must be a mapping, got list"):
        from_mapping(Params, data)


def test_int_is_accepted_where_a_number_is_expected(raw):
    params = build(raw, "train.learning_rate=1", "data.timeout_s=5")
    assert params.train.learning_rate == 1.0 and isinstance(params.train.learning_rate, float)
    assert params.data.timeout_s == 5.0 and isinstance(params.data.timeout_s, float)


def test_missing_required_data_section_is_a_config_error(raw):
    data = copy.deepcopy(raw)
    del data["data"]
    with pytest.raises(ConfigError, match="data"):
        from_mapping(Params, data)


# --- Literal choices ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("model.padding=VALID", r"model\.padding must be one of \['valid', 'same'\], got 'VALID'"),
        ("model.downsample=avgpool", r"model\.downsample must be one of \['maxpool', 'strided'\]"),
        ("train.optimizer=rmsprop", r"train\.optimizer must be one of \['adam', 'adamw', 'sgd'\], got 'rmsprop'"),
        ("train.schedule.name=linear", r"train\.schedule\.name must be one of"),
        (
            "train.mixed_precision=maybe",
            r"train\.mixed_precision must be one of \['auto', 'on', 'off', 'float16', 'bfloat16'\]",
        ),
    ],
)
def test_literal_values_outside_the_choices_are_rejected(raw, override, message):
    with pytest.raises(ConfigError, match=message):
        build(raw, override)


def test_literal_values_inside_the_choices_are_accepted(raw):
    params = build(
        raw, "model.padding=same", "model.downsample=strided", "train.optimizer=sgd", "train.schedule.name=onecycle"
    )
    assert (params.model.padding, params.model.downsample) == ("same", "strided")
    assert (params.train.optimizer, params.train.schedule.name) == ("sgd", "onecycle")


@pytest.mark.parametrize("value", ["on", "off"])
def test_mixed_precision_on_and_off_are_accepted_unquoted(raw, value):
    assert build(raw, f"train.mixed_precision={value}").train.mixed_precision == value


def test_exponent_notation_is_a_number(tmp_path, raw):
    data = copy.deepcopy(raw)
    data["train"]["learning_rate"] = 0.001
    path = write_params(tmp_path / "params.yaml", data)
    path.write_text(path.read_text().replace("learning_rate: 0.001", "learning_rate: 1e-3"))
    assert "learning_rate: 1e-3" in path.read_text()
    assert load_params(path).train.learning_rate == pytest.approx(1e-3)


# --- range checks ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("data.val_fraction=1.5", r"data\.val_fraction must be between 0 and 1"),
        ("data.val_fraction=0", r"data\.val_fraction must be between 0 and 1"),
        ("data.timeout_s=0", r"data\.timeout_s must be positive"),
        ("data.retries=0", r"data\.retries must be at least 1"),
        ("data.mirrors=[]", r"data\.mirrors needs at least one mirror"),
        ("train.optimizer=adam", r"train\.weight_decay needs optimizer adamw or sgd"),  # default decay 0.0005
        ("train.learning_rate=0", r"train\.learning_rate must be positive"),
        ("train.label_smoothing=1.0", r"train\.label_smoothing must be in \[0, 1\)"),
        ("train.epochs=0", r"train\.epochs must be at least 1"),
        ("train.early_stopping_patience=-1", r"train\.early_stopping_patience must be >= 0"),
        ("train.schedule.final_fraction=0", r"train\.schedule\.final_fraction must be in \(0, 1\]"),
        ("train.schedule.plateau_factor=1", r"train\.schedule\.plateau_factor must be in \(0, 1\)"),
        ("model.kernel_size=4", r"model\.kernel_size must be 1, 3, 5 or 7"),
        ("model.filters=[]", r"model\.filters needs at least one conv block"),
        ("model.filters=[32, 0]", r"model\.filters\[1\] must be at least 1"),
        ("model.dense_units=[0]", r"model\.dense_units\[0\] must be at least 1"),
        ("tune.space.lr={param: train.learning_rate, type: float}", r"tune\.space\.lr needs both low and high"),
        ("tune.study_name=' '", r"tune\.study_name must not be empty"),
        ("model.dropout=1.0", r"model\.dropout must be in \[0, 1\)"),
        ("model.augment.rotation_deg=90", r"model\.augment\.rotation_deg must be in \[0, 45\]"),
        ("model.augment.shift=0.5", r"model\.augment\.shift must be in \[0, 0\.5\)"),
        ("train.nondigits=-0.1", r"train\.nondigits must be in \[0, 1\]"),
        ("register.min_test_accuracy=1.5", r"register\.min_test_accuracy must be in \[0, 1\]"),
        ("register.challenger_alias=champion", r"register\.challenger_alias must differ from champion_alias"),
    ],
)
def test_out_of_range_values_are_rejected_naming_the_key(raw, override, message):
    with pytest.raises(ConfigError, match=message):
        build(raw, override)


def test_weight_decay_is_accepted_with_adamw_and_sgd(raw):
    assert build(raw, "train.optimizer=adamw", "train.weight_decay=0.01").train.weight_decay == 0.01
    assert build(raw, "train.optimizer=sgd", "train.weight_decay=0.0005").train.weight_decay == 0.0005


def test_missing_checksum_is_rejected():
    sums = {name: "0" * 64 for name in MNIST_FILES[:3]}
    with pytest.raises(ConfigError, match=r"data\.sha256 is missing checksums for \['t10k-labels-idx1-ubyte'\]"):
        from_mapping(DataParams, {**read_yaml(PARAMS)["data"], "sha256": sums}, prefix="data")


def test_a_replaced_section_is_validated_and_its_errors_name_the_full_key():
    params = load_params(PARAMS)
    with pytest.raises(ConfigError, match=r"train\.weight_decay needs optimizer adamw or sgd"):
        replace(params.train, optimizer="adam", weight_decay=0.1)
    with pytest.raises(ConfigError, match=r"model\.convs_per_block must be at least 1"):
        replace(params.model, convs_per_block=0)
    assert replace(params.train, epochs=3).epochs == 3 and params.train.epochs == 12


def test_every_bad_key_is_named_in_one_error(raw):
    with pytest.raises(ConfigError) as info:
        build(raw, "train.epochs=0", "model.padding=x", "train.epoch=1", "tune.pruner.percentile=0")
    message = str(info.value)
    assert "\n" not in message
    for part in ("unknown key(s) train.epoch", "train.epochs must be at least 1", "model.padding must be one of"):
        assert part in message
    assert "tune.pruner.percentile must be in (0, 100]" in message


@pytest.mark.parametrize(
    "dotted", ["train.epochs", "model.augment.zoom", "tune.pruner.percentile", "data.retries", "tune.space"]
)
def test_a_key_missing_from_params_yaml_is_an_error_not_a_hidden_default(raw, dotted):
    """params.yaml is the one home of every default: the dataclasses have none to fall back on."""
    section = copy.deepcopy(raw)
    *parents, last = dotted.split(".")
    node = section
    for part in parents:
        node = node[part]
    del node[last]
    with pytest.raises(ConfigError, match=rf"missing key\(s\) {re.escape(dotted)}"):
        from_mapping(Params, section)


# --- overrides ------------------------------------------------------------------------------


def test_apply_overrides_parses_values_as_yaml_and_creates_nested_keys():
    raw = {"train": {"epochs": 10}}
    out = apply_overrides(
        raw,
        [
            "train.epochs=2",
            "train.learning_rate=0.5",
            "model.filters=[16, 32, 64]",
            "model.batch_norm=true",
            "train.schedule.name=cosine",
            "tracking.experiment=a=b",  # only the first '=' splits
            "register.model_name= spaced ",
        ],
    )
    assert out["train"]["epochs"] == 2
    assert out["train"]["learning_rate"] == 0.5
    assert out["model"]["filters"] == [16, 32, 64]
    assert out["model"]["batch_norm"] is True
    assert out["train"]["schedule"] == {"name": "cosine"}
    assert out["tracking"]["experiment"] == "a=b"
    assert out["register"]["model_name"] == "spaced"
    assert raw == {"train": {"epochs": 10}}, "the input dict must not be modified"


def test_apply_overrides_later_values_win():
    assert apply_overrides({}, ["train.epochs=2", "train.epochs=3"]) == {"train": {"epochs": 3}}


def test_apply_overrides_rejects_a_value_without_equals_sign():
    with pytest.raises(ConfigError, match=r"override 'train\.epochs' must look like section\.key=value"):
        apply_overrides({}, ["train.epochs"])


def test_apply_overrides_rejects_descending_into_a_scalar():
    with pytest.raises(ConfigError, match=r"'epochs' is not a section"):
        apply_overrides({"train": {"epochs": 10}}, ["train.epochs.max=3"])


def test_load_params_applies_overrides(raw):
    params = load_params(PARAMS, ["train.epochs=1", "model.filters=[8]"])
    assert params.train.epochs == 1
    assert params.model.filters == (8,)
    assert load_params(PARAMS).train.epochs == 12, "overrides must not leak into the file"


# --- flatten --------------------------------------------------------------------------------


def test_flatten_gives_dotted_keys_and_list_strings():
    flat = flatten(load_params(PARAMS))
    assert flat["train.learning_rate"] == 0.002
    assert flat["train.schedule.name"] == "onecycle"
    assert flat["model.augment.rotation_deg"] == 8.0
    assert flat["model.filters"] == "[32, 64]"
    assert flat["model.dense_units"] == "[128]"
    assert flat["data.sha256.train-images-idx3-ubyte"].startswith("ba891046")
    assert flat["data.mirrors"].startswith("[https://")
    for key in ("train", "model", "model.augment", "train.schedule", "data.sha256"):
        assert key not in flat, f"section {key} should be flattened into dotted keys"
    assert not any(isinstance(v, (dict, list, tuple)) and v for v in flat.values())


def test_flatten_with_prefix():
    assert flatten(config.AugmentParams(rotation_deg=10.0, shift=0.0, zoom=0.0), "aug.") == {
        "aug.rotation_deg": 10.0,
        "aug.shift": 0.0,
        "aug.zoom": 0.0,
    }


# --- the params file itself -----------------------------------------------------------------


def test_missing_params_file_names_it(tmp_path):
    missing = tmp_path / "nowhere" / "params.yaml"
    with pytest.raises(ConfigError, match="not found") as info:
        load_params(missing)
    assert str(missing) in str(info.value)


def test_invalid_yaml_is_a_config_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_params(path)


def test_yaml_that_is_not_a_mapping_is_a_config_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("- train\n- model\n")
    with pytest.raises(ConfigError, match="must be a mapping of sections"):
        load_params(path)


# --- the command line -----------------------------------------------------------------------


def _cli() -> list[str]:
    script = shutil.which("mnist-cnn")
    if script:
        return [script]
    return [sys.executable, "-c", "from mnist_cnn.cli import main; main()"]


def test_cli_params_with_a_misspelt_override_exits_1_with_one_error_line():
    proc = subprocess.run(
        _cli() + ["params", "--set", "train.epoch=2"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert "train.epoch" in lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_cli_params_prints_the_resolved_settings_with_an_override():
    proc = subprocess.run(
        _cli() + ["params", "--set", "train.epochs=2"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    shown = parse_yaml(proc.stdout)
    assert shown["train"]["epochs"] == 2
    assert shown["model"]["filters"] == [32, 64]
