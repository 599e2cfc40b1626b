import keras
import numpy as np
import pytest

from keras_ssl3d import Classifier2D, Encoder2D, Encoder3D, Segmenter3D
from tests.helpers import random_images, random_volumes, tiny_encoder2d, tiny_encoder3d, to_numpy

pytestmark = pytest.mark.multibackend


def _residual_encoder_params(in_channels, filters):
    """Hand count: per block conv3^3 x2 (no bias), BN (4 per channel) x2, 1x1x1 projection + BN."""
    total, cin = 0, in_channels
    for f in filters:
        total += 27 * cin * f + 4 * f + 27 * f * f + 4 * f
        if cin != f:
            total += cin * f + 4 * f
        cin = f
    return total


@pytest.mark.parametrize("in_channels", [1, 2, 4])
def test_default_encoder_parameter_count(in_channels):
    encoder = Encoder3D(in_channels=in_channels)
    assert encoder.filters == (32, 64, 128, 256, 512)
    assert encoder.count_params() == _residual_encoder_params(in_channels, (32, 64, 128, 256, 512))
    if in_channels == 4:
        assert encoder.count_params() == 14_317_696


def test_default_encoder_bottleneck_at_128():
    encoder = Encoder3D(in_channels=4)
    assert encoder.compute_output_shape((1, 128, 128, 128, 4)) == (1, 8, 8, 8, 512)
    assert encoder.size_divisor == 16
    segmenter = Segmenter3D(encoder, num_classes=4)
    assert segmenter.compute_output_shape((1, 128, 128, 128, 4)) == (1, 128, 128, 128, 4)


@pytest.mark.parametrize("size,channels", [(16, 1), (13, 2), (24, 4)])
def test_encoder3d_any_size_and_channels(size, channels):
    encoder = tiny_encoder3d(in_channels=channels)
    out = to_numpy(encoder(random_volumes(2, size, channels)))
    expected = size // 2 // 2
    assert out.shape == (2, expected, expected, expected, 16)


def test_encoder3d_pyramid_and_strided_downsampling():
    encoder = tiny_encoder3d(in_channels=2, downsample="conv", blocks_per_level=2, norm="group")
    features = encoder.feature_extractor()(random_volumes(1, 16, 2))
    assert [tuple(f.shape) for f in features] == [(1, 16, 16, 16, 4), (1, 8, 8, 8, 8), (1, 4, 4, 4, 16)]
    assert list(encoder.pyramid_outputs) == ["level1", "level2", "level3"]
    assert not any("pool" in layer.name for layer in encoder.layers)


def test_encoder3d_validates_arguments():
    with pytest.raises(ValueError, match="downsample"):
        Encoder3D(downsample="avg")
    with pytest.raises(ValueError, match="channel_names"):
        Encoder3D(in_channels=2, channel_names=["t1"])


def test_segmenter3d_shapes_and_probabilities():
    encoder = tiny_encoder3d(in_channels=4)
    segmenter = Segmenter3D(encoder, num_classes=3)
    probs = to_numpy(segmenter(random_volumes(2, 16, 4)))
    assert probs.shape == (2, 16, 16, 16, 3)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert segmenter.encoder is encoder
    sigmoid = Segmenter3D(tiny_encoder3d(in_channels=1), num_classes=1, activation="sigmoid")
    assert to_numpy(sigmoid(random_volumes(1, 8, 1))).shape == (1, 8, 8, 8, 1)


def test_segmenter3d_on_a_one_level_encoder_has_no_upsampling_level(tmp_path):
    # `pretrain --filters 8` makes such an encoder; fine-tuning it used to fail in compute_output_shape.
    encoder = Encoder3D(in_channels=2, filters=(4,))
    segmenter = Segmenter3D(encoder, num_classes=3)
    assert segmenter.decoder_filters == () and encoder.size_divisor == 1
    x = random_volumes(2, 6, 2)  # any size: nothing is down-sampled
    probs = to_numpy(segmenter(x))
    assert probs.shape == (2, 6, 6, 6, 3)
    # encoder (27*2*4 + 4*4 + 27*4*4 + 4*4 + 2*4 + 4*4) + head (4*3 + 3): no decoder weight at all
    assert segmenter.count_params() == _residual_encoder_params(2, (4,)) + 4 * 3 + 3
    segmenter.save(tmp_path / "one.keras")
    restored = keras.saving.load_model(tmp_path / "one.keras")
    np.testing.assert_allclose(to_numpy(restored(x)), probs, atol=1e-6)


def test_encoder2d_densenet121_and_tiny():
    assert Encoder2D(in_channels=3).count_params() == 7_037_504  # DenseNet-121 without top
    encoder = tiny_encoder2d(in_channels=1, pooling="avg")
    assert to_numpy(encoder(random_images(2, 32, 1))).shape == (2, encoder.output_channels)
    fmap = tiny_encoder2d(in_channels=5)
    # stem (/4) and one transition (/2) for two dense blocks
    assert to_numpy(fmap(random_images(1, 64, 5))).shape == (1, 8, 8, fmap.output_channels)


def test_classifier2d_outputs_probabilities():
    classifier = Classifier2D(tiny_encoder2d(), num_classes=5)
    probs = to_numpy(classifier(random_images(3, 32)))
    assert probs.shape == (3, 5)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_a_few_gradient_steps_reduce_the_loss():
    keras.utils.set_random_seed(1)
    encoder = tiny_encoder3d(in_channels=1, norm="instance")
    segmenter = Segmenter3D(encoder, num_classes=2)
    segmenter.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy")
    x = random_volumes(4, 16, 1)
    y = (x[..., 0] > 0.5).astype("int32")
    history = segmenter.fit(x, y, epochs=8, batch_size=2, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0]


def test_first_block_structure_does_not_depend_on_input_channels():
    """Adapting 2 -> 4 channels must work even when 4 equals the first level's width."""
    from keras_ssl3d.presets.adapt import adapt_input_channels

    encoder = tiny_encoder3d(in_channels=2)  # first width 4
    adapted = adapt_input_channels(encoder, in_channels=4, strategy="duplicate")
    x = random_volumes(1, 8, 2)
    repeated = np.concatenate([x, x], axis=-1)
    np.testing.assert_allclose(to_numpy(adapted(repeated)), to_numpy(encoder(x)), rtol=1e-4, atol=1e-5)


def test_patch_tasks_refuse_patches_smaller_than_the_encoder_downsampling():
    from keras_ssl3d import CPC, ConfigError, Jigsaw

    with pytest.raises(ConfigError, match="smaller than the encoder's smallest input \\(16\\)"):
        CPC(encoder=Encoder3D(in_channels=1, filters=(2, 2, 2, 2, 2)), input_size=64)
    with pytest.raises(ConfigError, match="does not fit"):
        Jigsaw(encoder=tiny_encoder3d(), input_size=8, num_permutations=10)
