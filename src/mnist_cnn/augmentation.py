"""Training-only augmentation: a random rotation, zoom and shift per image, composed into one
affine transform and one bilinear resampling, put in front of the network for fitting only. The
saved network is the inference graph alone; it carries no augmentation layer."""

from __future__ import annotations

import math

import keras
from keras import layers, ops

from mnist_cnn.config import AugmentParams


class RandomAffine(layers.Layer):
    """Rotates by up to ±`rotation_deg` about the image centre, scales the sampled area by 1 ± `zoom`
    and shifts by up to ±`shift` of the image size, each drawn uniformly per image; pixels from
    outside the image are 0. Identity unless training.

    Why not Keras' RandomRotation, RandomZoom and RandomTranslation: each resamples the batch, and
    the three took a fifth of the default network's training step on CPU; with one resampling the
    step costs about what it costs without augmentation."""

    def __init__(self, rotation_deg: float, zoom: float, shift: float, seed: int | None = None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # resample raw pixels in full precision under mixed policies
        super().__init__(**kwargs)
        self.rotation_deg, self.zoom, self.shift, self.seed = rotation_deg, zoom, shift, seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def transforms(self, batch_size, height: int, width: int):
        """(batch_size, 8) projective transforms (Keras' `affine_transform` layout) mapping each
        output pixel to the input point it samples."""
        u = keras.random.uniform((batch_size, 4), -1.0, 1.0, seed=self.seed_generator)
        angle = u[:, 0] * (self.rotation_deg * math.pi / 180.0)
        scale = 1.0 + u[:, 1] * self.zoom
        shift_x, shift_y = u[:, 2] * (self.shift * width), u[:, 3] * (self.shift * height)
        cos, sin = ops.cos(angle) * scale, ops.sin(angle) * scale
        cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
        zero = ops.zeros_like(cos)
        return ops.stack(
            [cos, -sin, cx - cos * cx + sin * cy - shift_x, sin, cos, cy - sin * cx - cos * cy - shift_y, zero, zero],
            axis=1,
        )

    def call(self, images, training=False):
        if not training:
            return images
        transforms = self.transforms(ops.shape(images)[0], images.shape[1], images.shape[2])
        return ops.image.affine_transform(images, transforms, interpolation="bilinear", fill_mode="constant")

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "rotation_deg": self.rotation_deg,
            "zoom": self.zoom,
            "shift": self.shift,
            "seed": self.seed,
        }


def for_training(network: keras.Model, params: AugmentParams, seed: int) -> keras.Model:
    """`network` behind a RandomAffine layer (sharing its weights) when augmentation is on, else
    `network` itself: fit this, save `network`."""
    if not params.active:
        return network
    inputs = keras.Input(shape=network.input_shape[1:], name="pixels")
    augmented = RandomAffine(params.rotation_deg, params.zoom, params.shift, seed=seed, name="augment")(inputs)
    return keras.Model(inputs, network(augmented), name=f"{network.name}_training")
