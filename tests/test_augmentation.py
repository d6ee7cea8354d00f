"""The training-only augmentation: one random affine transform per image, identity at inference,
reproducible from its seed, and never part of the network training returns."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mnist_cnn import augmentation, training
from mnist_cnn.augmentation import RandomAffine
from mnist_cnn.config import AugmentParams
from mnist_cnn.schema import replace
from test_model import SEED_MODEL, SEED_TRAIN, seed_model


def blob(row: int, col: int, n: int = 64) -> np.ndarray:
    """`n` copies of a 3x3 square of ink centred on (row, col)."""
    x = np.zeros((n, 28, 28, 1), dtype="float32")
    x[:, row - 1 : row + 2, col - 1 : col + 2] = 255.0
    return x


def centroids(images: np.ndarray) -> np.ndarray:
    """(n, 2) ink centroids (row, col)."""
    ink = images[..., 0]
    rows, cols = np.indices(ink.shape[1:])
    mass = ink.sum(axis=(1, 2))
    return np.stack([(ink * rows).sum(axis=(1, 2)) / mass, (ink * cols).sum(axis=(1, 2)) / mass], axis=1)


def augment(layer: RandomAffine, x: np.ndarray) -> np.ndarray:
    return keras.ops.convert_to_numpy(layer(x, training=True))


def test_identity_at_inference():
    x = blob(10, 20)
    assert np.array_equal(keras.ops.convert_to_numpy(RandomAffine(30, 0.2, 0.2, seed=1)(x, training=False)), x)


def test_shift_moves_ink_by_at_most_the_shift_and_by_different_amounts():
    moved = centroids(augment(RandomAffine(0.0, 0.0, 0.1, seed=1), blob(14, 14))) - 14
    assert np.abs(moved).max() <= 0.1 * 28 + 0.01
    assert np.abs(moved).max() > 1.0, "the shifts reach a good part of the range"
    assert len(np.unique(moved.round(2), axis=0)) > 32, "each image draws its own shift"


def test_rotation_turns_about_the_image_centre():
    centre = (28 - 1) / 2  # the centre of pixel rows 0..27
    x = np.zeros((64, 28, 28, 1), dtype="float32")
    x[:, 13:15, 13:15] = 255.0  # a 2x2 square centred on the image centre stays put
    x[:, 13:15, 22:24] = 255.0  # and one to its right swings up or down by up to 20 degrees
    out = augment(RandomAffine(20.0, 0.0, 0.0, seed=2), x)
    centre_dot = centroids(out[:, :, :18])
    assert np.allclose(centre_dot, centre, atol=0.05)
    right = centroids(out[:, :, 18:])
    radius = 22.5 - centre
    angles = np.degrees(np.arctan2(right[:, 0] - centre, right[:, 1] + 18 - centre))
    assert np.abs(angles).max() <= 20.5 and np.abs(angles).max() > 10
    assert np.allclose(np.hypot(right[:, 0] - centre, right[:, 1] + 18 - centre), radius, atol=0.3)


def test_zoom_scales_distances_from_the_centre():
    x = np.zeros((64, 28, 28, 1), dtype="float32")
    x[:, 13:15, 21:23] = 255.0  # 8 pixels right of the centre
    right = centroids(augment(RandomAffine(0.0, 0.2, 0.0, seed=3), x))[:, 1] - 13.5
    # sampling an area 1 ± 0.2 times as wide shows the ink at distance 8 / (1 ± 0.2)
    assert right.min() >= 8 / 1.2 - 0.1 and right.max() <= 8 / 0.8 + 0.1
    assert right.max() - right.min() > 2


def test_same_seed_same_transforms():
    x = blob(12, 16)
    assert np.array_equal(
        augment(RandomAffine(8, 0.08, 0.08, seed=5), x), augment(RandomAffine(8, 0.08, 0.08, seed=5), x)
    )
    assert not np.array_equal(
        augment(RandomAffine(8, 0.08, 0.08, seed=5), x), augment(RandomAffine(8, 0.08, 0.08, seed=6), x)
    )


def test_resamples_in_float32_under_a_mixed_policy():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        layer = RandomAffine(8, 0.08, 0.08, seed=1)
        assert layer.compute_dtype == "float32"
        assert keras.ops.convert_to_numpy(layer(blob(14, 14), training=True)).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_no_augmentation_no_wrapper():
    network = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    assert augmentation.for_training(network, AugmentParams(rotation_deg=0, shift=0, zoom=0), 1) is network
    wrapped = augmentation.for_training(network, AugmentParams(rotation_deg=8, shift=0, zoom=0), 1)
    assert wrapped is not network and wrapped.count_params() == network.count_params()


def test_training_augments_but_returns_the_bare_network(tiny_splits, tmp_path):
    train_split, val_split = tiny_splits
    model_params = seed_model(
        filters=(4,), dense_units=(8,), augment=AugmentParams(rotation_deg=8, shift=0.08, zoom=0.08)
    )
    params = replace(SEED_TRAIN, epochs=1, batch_size=64, mixed_precision="off")
    plain = training.train(
        replace(model_params, augment=SEED_MODEL.augment), params, train_split, val_split, tmp_path / "a", verbose=0
    )
    augmented = training.train(model_params, params, train_split, val_split, tmp_path / "b", verbose=0)
    assert not any(isinstance(layer, RandomAffine) for layer in augmented.model.layers)
    assert [type(layer) for layer in augmented.model.layers] == [type(layer) for layer in plain.model.layers]
    assert augmented.history[0]["train_loss"] != pytest.approx(plain.history[0]["train_loss"], abs=1e-6)
