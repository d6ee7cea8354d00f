"""The CNN, built from ModelParams. Input is raw 0-255 pixels (N, 28, 28, 1); scaling is a layer of
the model, so the saved `.keras` file needs no extra code and loads in safe mode. Augmentation is
not part of it: training puts it in front (`augmentation.for_training`). The last Dense layer
gives the logits, a softmax the probabilities."""

from __future__ import annotations

import keras
from keras import layers

from mnist_cnn.config import ModelParams

INPUT_SHAPE = (28, 28, 1)


def build_model(params: ModelParams, seed: int = 42) -> keras.Model:
    inputs = keras.Input(shape=INPUT_SHAPE, name="pixels")
    x = layers.Rescaling(1.0 / 255.0, name="scale")(inputs)

    for b, (filters, convs) in enumerate(zip(params.filters, params.block_convs(), strict=True), start=1):
        for c in range(1, convs + 1):
            last = c == convs
            strided = last and params.downsample == "strided"
            x = layers.Conv2D(
                filters,
                params.kernel_size,
                strides=2 if strided else 1,
                padding=params.padding,
                use_bias=not params.batch_norm,
                activation=None if params.batch_norm else "relu",
                name=f"block{b}_conv{c}",
            )(x)
            if params.batch_norm:
                x = layers.BatchNormalization(name=f"block{b}_bn{c}")(x)
                x = layers.Activation("relu", name=f"block{b}_relu{c}")(x)
        if params.downsample == "maxpool":
            x = layers.MaxPooling2D(2, name=f"block{b}_pool")(x)
        if params.block_dropout:
            dropout = layers.SpatialDropout2D if params.spatial_dropout else layers.Dropout
            x = dropout(params.block_dropout, seed=seed + 10 + b, name=f"block{b}_dropout")(x)

    x = layers.Flatten(name="flatten")(x)
    for d, units in enumerate(params.dense_units, start=1):
        x = layers.Dense(
            units, use_bias=not params.batch_norm, activation=None if params.batch_norm else "relu", name=f"dense{d}"
        )(x)
        if params.batch_norm:
            x = layers.BatchNormalization(name=f"dense{d}_bn")(x)
            x = layers.Activation("relu", name=f"dense{d}_relu")(x)
    if params.dropout:
        x = layers.Dropout(params.dropout, seed=seed + 100, name="dropout")(x)
    logits = layers.Dense(10, dtype="float32", name="logits")(x)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(logits)
    return keras.Model(inputs, outputs, name="mnist_cnn")


def with_temperature(model: keras.Model, temperature: float) -> keras.Model:
    """The same network (shared layers and weights) with its logits divided by `temperature`
    before the softmax: calibrated probabilities from built-in layers, so it loads in safe mode."""
    logits = model.get_layer("logits").output
    scaled = layers.Rescaling(1.0 / temperature, dtype="float32", name="temperature")(logits)
    outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(scaled)
    return keras.Model(model.input, outputs, name=model.name)
