"""Encoder warm-up: frozen for N epochs then unfrozen inside one fit call, on every backend."""

import keras
import numpy as np
import pytest

from keras_ssl3d import Segmenter3D
from keras_ssl3d.errors import ConfigError
from keras_ssl3d.finetune.warmup import EncoderWarmup, apply_strategy
from helpers import tiny_encoder3d

pytestmark = pytest.mark.multibackend


class _Snapshots(keras.callbacks.Callback):
    """Copies of encoder / decoder weights at the start of training and after every epoch."""

    def __init__(self, encoder, decoder):
        super().__init__()
        self.encoder, self.decoder = encoder, decoder
        self.encoder_weights, self.decoder_weights = [], []

    def _take(self):
        self.encoder_weights.append([np.array(w) for w in self.encoder.get_weights()])
        self.decoder_weights.append([np.array(w) for w in self.decoder.get_weights()])

    def on_train_begin(self, logs=None):
        self._take()

    def on_epoch_end(self, epoch, logs=None):
        self._take()


def _moved(a, b):
    return max(float(np.abs(x - y).max()) for x, y in zip(a, b))


def _fit(strategy, warmup_epochs, epochs, pretrained_decoder=False):
    encoder = tiny_encoder3d(in_channels=2, filters=(4, 8), norm="batch")
    model = Segmenter3D(encoder, num_classes=3)
    rng = np.random.default_rng(0)
    x = rng.random((4, 8, 8, 8, 2), dtype=np.float32)
    y = rng.integers(0, 3, size=(4, 8, 8, 8))
    callbacks = apply_strategy(model, strategy, warmup_epochs, pretrained_decoder=pretrained_decoder)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    snaps = _Snapshots(model.encoder, model.decoder)
    history = model.fit(x, y, batch_size=2, epochs=epochs, callbacks=callbacks + [snaps], verbose=0, shuffle=False)
    return model, snaps, history


def test_warmup_freezes_then_unfreezes_in_one_fit():
    model, snaps, history = _fit("warmup", warmup_epochs=2, epochs=4)
    enc, dec = snaps.encoder_weights, snaps.decoder_weights
    # epochs 0 and 1: encoder (kernels and batch-norm statistics) bit-identical, decoder trains
    assert _moved(enc[0], enc[1]) == 0.0
    assert _moved(enc[1], enc[2]) == 0.0
    assert _moved(dec[0], dec[1]) > 1e-4 and _moved(dec[1], dec[2]) > 1e-4
    # epochs 2 and 3: the encoder trains too, and the decoder keeps training
    assert _moved(enc[2], enc[3]) > 1e-4 and _moved(enc[3], enc[4]) > 1e-4
    assert _moved(dec[2], dec[3]) > 1e-4
    assert model.encoder.trainable
    assert np.all(np.isfinite(history.history["loss"]))
    # the optimizer now tracks every trainable variable
    assert len(model.optimizer._trainable_variables) == len(model.trainable_variables)


def test_warmup_can_freeze_a_pretrained_decoder_too():
    """--warmup-freezes pretrained: encoder and decoder fixed, only the output layer trains, then all of it."""
    model, snaps, _ = _fit("warmup", warmup_epochs=2, epochs=3, pretrained_decoder=True)
    enc, dec = snaps.encoder_weights, snaps.decoder_weights
    assert _moved(enc[0], enc[2]) == 0.0 and _moved(dec[0], dec[2]) == 0.0
    assert _moved(enc[2], enc[3]) > 1e-4 and _moved(dec[2], dec[3]) > 1e-4
    assert model.encoder.trainable and model.decoder.trainable
    assert len(model.optimizer._trainable_variables) == len(model.trainable_variables)
    # frozen: the output layer is all that ever trains
    model, snaps, _ = _fit("frozen", warmup_epochs=0, epochs=1, pretrained_decoder=True)
    assert [id(v) for v in model.trainable_variables] == [id(v) for v in model.get_layer("head").trainable_variables]
    assert _moved(snaps.decoder_weights[0], snaps.decoder_weights[1]) == 0.0


def test_frozen_and_full_strategies():
    _, snaps, _ = _fit("frozen", warmup_epochs=0, epochs=2)
    assert _moved(snaps.encoder_weights[0], snaps.encoder_weights[-1]) == 0.0
    assert _moved(snaps.decoder_weights[0], snaps.decoder_weights[-1]) > 1e-4

    _, snaps, _ = _fit("full", warmup_epochs=5, epochs=1)
    assert _moved(snaps.encoder_weights[0], snaps.encoder_weights[1]) > 1e-4


def test_bad_arguments():
    model = Segmenter3D(tiny_encoder3d(in_channels=1, filters=(4, 8)), num_classes=2)
    with pytest.raises(ConfigError, match="strategy"):
        apply_strategy(model, "partial", 3)
    with pytest.raises(ConfigError, match="warmup_epochs"):
        EncoderWarmup(model.encoder, -1)
    with pytest.raises(ConfigError, match="encoder"):
        apply_strategy(keras.Sequential([keras.layers.Dense(1)]), "warmup", 1)
    assert apply_strategy(model, "warmup", 0) == [] and model.encoder.trainable
    no_decoder = keras.Model(model.input, model.output)
    no_decoder.encoder = model.encoder
    with pytest.raises(ConfigError, match="no .decoder"):
        apply_strategy(no_decoder, "warmup", 1, pretrained_decoder=True)


def test_resumed_run_starts_in_the_state_of_its_epoch():
    model = Segmenter3D(tiny_encoder3d(in_channels=1, filters=(4, 8)), num_classes=2)
    apply_strategy(model, "warmup", 2, initial_epoch=1)
    assert not model.encoder.trainable
    apply_strategy(model, "warmup", 2, initial_epoch=2)
    assert model.encoder.trainable
    apply_strategy(model, "frozen", 2, initial_epoch=50)
    assert not model.encoder.trainable
    apply_strategy(model, "warmup", 2, initial_epoch=1, pretrained_decoder=True)
    assert not model.encoder.trainable and not model.decoder.trainable
    apply_strategy(model, "warmup", 2, initial_epoch=2, pretrained_decoder=True)
    assert model.encoder.trainable and model.decoder.trainable
