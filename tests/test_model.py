"""The network's architecture, and bit-identical training for a seed (tiny data, CPU)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from pathlib import Path  # noqa: E402

from mnist_cnn import presets, training  # noqa: E402
from mnist_cnn.config import AugmentParams  # noqa: E402
from mnist_cnn.errors import ConfigError  # noqa: E402
from mnist_cnn.model import build_model  # noqa: E402
from mnist_cnn.schema import replace  # noqa: E402

SEED_MODEL, SEED_TRAIN = presets.load("seed", directory=Path(__file__).resolve().parents[1] / "presets")


def seed_model(**changes):
    return replace(SEED_MODEL, **changes)


def layer_summary(model) -> list[tuple]:
    out = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind == "InputLayer":
            continue
        if kind == "Conv2D":
            out.append((kind, layer.filters))
        elif kind == "Dense":
            out.append((kind, layer.units, layer.activation.__name__))
        elif kind == "Dropout":
            out.append((kind, layer.rate))
        else:
            out.append((kind,))
    return out


def test_seed_preset_model_is_the_classic_keras_mnist_cnn():
    model = build_model(SEED_MODEL)
    assert model.count_params() == 225_034
    assert layer_summary(model) == [
        ("Rescaling",),
        ("Conv2D", 32),
        ("MaxPooling2D",),
        ("Conv2D", 64),
        ("MaxPooling2D",),
        ("Flatten",),
        ("Dense", 128, "relu"),
        ("Dropout", 0.5),
        ("Dense", 10, "linear"),
        ("Activation",),
    ]
    assert model.input_shape == (None, 28, 28, 1)
    assert model.output_shape == (None, 10)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert all(c.kernel_size == (3, 3) and c.strides == (1, 1) and c.activation.__name__ == "relu" for c in convs)


def test_model_scales_raw_pixels_and_outputs_probabilities():
    model = build_model(SEED_MODEL)
    x = np.random.default_rng(0).integers(0, 256, size=(4, 28, 28, 1)).astype("float32")
    proba = keras.ops.convert_to_numpy(model(x, training=False))
    assert proba.shape == (4, 10)
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    scale = model.get_layer("scale")
    assert scale.scale == pytest.approx(1 / 255)


def test_batch_norm_strided_augmented_config_builds_without_augmentation_layers():
    params = seed_model(
        filters=(8, 16),
        convs_per_block=2,
        padding="same",
        downsample="strided",
        batch_norm=True,
        block_dropout=0.1,
        dense_units=(32, 16),
        augment=AugmentParams(rotation_deg=10, shift=0.1, zoom=0.1),
    )
    model = build_model(params, seed=3)
    assert model.output_shape == (None, 10)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert "MaxPooling2D" not in kinds
    assert not [k for k in kinds if k.startswith("Random")], "augmentation is training's, not the network's"
    assert kinds.count("BatchNormalization") == 4 + 2  # two per block, one per dense layer
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert [c.strides for c in convs] == [(1, 1), (2, 2), (1, 1), (2, 2)]
    assert all(not c.use_bias for c in convs), "batch norm makes the conv bias redundant"
    # 28 -> 14 -> 7 with 'same' padding and stride 2
    assert model.get_layer("flatten").output.shape[1] == 7 * 7 * 16
    x = np.zeros((2, 28, 28, 1), dtype="float32")
    assert keras.ops.convert_to_numpy(model(x, training=False)).shape == (2, 10)


def test_convs_per_block_may_differ_between_blocks():
    model = build_model(seed_model(filters=(8, 16), convs_per_block=(1, 2), batch_norm=True))
    convs = [layer.name for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert convs == ["block1_conv1", "block2_conv1", "block2_conv2"]
    with pytest.raises(ConfigError, match=r"model\.convs_per_block lists 3 blocks but model\.filters lists 2"):
        seed_model(filters=(8, 16), convs_per_block=(1, 2, 2))


def test_spatial_dropout_drops_whole_feature_maps_and_the_network_loads_in_safe_mode(tmp_path):
    params = seed_model(filters=(8, 16), convs_per_block=2, block_dropout=0.5, spatial_dropout=True)
    model = build_model(params, seed=3)
    layer = model.get_layer("block1_dropout")
    x = np.ones((4, 12, 12, 8), dtype="float32")
    maps = keras.ops.convert_to_numpy(layer(x, training=True)).reshape(4, 144, 8)
    assert (maps.min(axis=1) == maps.max(axis=1)).all(), "each feature map is dropped or kept whole"
    assert set(np.unique(maps)) == {0.0, 2.0}
    assert (keras.ops.convert_to_numpy(layer(x, training=False)) == 1.0).all()
    plain = build_model(replace(params, spatial_dropout=False), seed=3).get_layer("block1_dropout")
    values = keras.ops.convert_to_numpy(plain(x, training=True)).reshape(4, 144, 8)
    assert (values.min(axis=1) != values.max(axis=1)).any(), "plain dropout drops single values"
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True, compile=False)
    images = np.random.default_rng(0).integers(0, 256, size=(2, 28, 28, 1)).astype("float32")
    assert np.allclose(keras.ops.convert_to_numpy(loaded(images)), keras.ops.convert_to_numpy(model(images)))


# --- determinism ----------------------------------------------------------------------------


def train_once(tiny_splits, work_dir, seed: int):
    train_split, val_split = tiny_splits
    params = replace(SEED_TRAIN, epochs=1, batch_size=64, seed=seed, mixed_precision="off", early_stopping_patience=0)
    return training.train(SEED_MODEL, params, train_split, val_split, work_dir, verbose=0)


@pytest.mark.slow
def test_bfloat16_training_is_deterministic_and_saves_a_float32_network(tiny_splits, tmp_path):
    train_split, val_split = tiny_splits
    params = replace(SEED_TRAIN, epochs=1, batch_size=64, mixed_precision="bfloat16", early_stopping_patience=0)
    runs = [training.train(SEED_MODEL, params, train_split, val_split, tmp_path / k, verbose=0) for k in "ab"]
    assert keras.mixed_precision.global_policy().name == "float32", "the policy is reset after training"
    for run in runs:
        assert {layer.dtype_policy.name for layer in run.model.layers} == {"float32"}
    for a, b in zip(runs[0].model.get_weights(), runs[1].model.get_weights(), strict=True):
        assert np.array_equal(a, b)
    x = val_split.x[:8, ..., None].astype("float32")
    assert keras.ops.convert_to_numpy(runs[0].model(x, training=False)).dtype == np.float32


@pytest.mark.slow
def test_training_is_bit_identical_for_the_same_seed(tiny_splits, tmp_path):
    first = train_once(tiny_splits, tmp_path / "a", seed=7)
    second = train_once(tiny_splits, tmp_path / "b", seed=7)
    other = train_once(tiny_splits, tmp_path / "c", seed=8)

    w1 = first.model.get_weights()
    w2 = second.model.get_weights()
    assert len(w1) == len(w2) == 8
    for i, (a, b) in enumerate(zip(w1, w2, strict=True)):
        assert np.array_equal(a, b), f"weight {i} differs between two runs with the same seed"
    assert first.history[0]["train_loss"] == second.history[0]["train_loss"]
    # ... and the comparison can tell runs apart: another seed gives other weights
    assert not all(np.array_equal(a, b) for a, b in zip(w1, other.model.get_weights(), strict=True))

    assert [r["epoch"] for r in first.history] == [1]
    assert first.best_epoch == 1
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(first.history[0])
    assert list((tmp_path / "a").iterdir()) == [], "work_dir must be emptied after success"
