import keras
import numpy as np
import pytest

from keras_ssl3d import ResidualBlock, UNetDecoder3D
from tests.helpers import to_numpy

pytestmark = pytest.mark.multibackend


@pytest.mark.parametrize("norm", ["batch", "group", "instance", "none"])
def test_residual_block_3d_shapes_and_projection(norm):
    block = ResidualBlock(8, rank=3, norm=norm)
    x = np.random.rand(2, 6, 6, 6, 3).astype("float32")
    y = to_numpy(block(x))
    assert y.shape == (2, 6, 6, 6, 8)
    assert (y >= 0).all()  # ends in a ReLU
    assert block.shortcut_conv is not None  # width changes 3 -> 8: 1x1x1 projection
    assert block.shortcut_conv.kernel.shape == (1, 1, 1, 3, 8)


def test_residual_block_identity_shortcut_and_strides():
    same = ResidualBlock(4, rank=2)
    same(np.zeros((1, 8, 8, 4), "float32"))
    assert same.shortcut_conv is None
    strided = ResidualBlock(4, rank=2, strides=2)
    assert to_numpy(strided(np.zeros((1, 8, 8, 4), "float32"))).shape == (1, 4, 4, 4)
    assert strided.shortcut_conv is not None


def test_residual_block_is_residual():
    """With the conv path zeroed, the block is relu(shortcut(x))."""
    block = ResidualBlock(3, rank=3, norm="none")
    x = np.random.randn(1, 4, 4, 4, 3).astype("float32")
    block(x)
    block.conv2.kernel.assign(np.zeros(block.conv2.kernel.shape, "float32"))
    block.conv2.bias.assign(np.zeros(block.conv2.bias.shape, "float32"))
    np.testing.assert_allclose(to_numpy(block(x)), np.maximum(x, 0), atol=1e-6)


def test_residual_block_config_round_trip():
    block = ResidualBlock(8, rank=2, strides=2, norm="group", name="rb")
    clone = ResidualBlock.from_config(block.get_config())
    assert clone.get_config() == block.get_config()
    with pytest.raises(ValueError, match="norm"):
        ResidualBlock(8, norm="layer")
    with pytest.raises(ValueError, match="rank"):
        ResidualBlock(8, rank=1)


def test_unet_decoder_restores_resolution():
    features = [np.zeros((1, 16 // 2**i, 16 // 2**i, 16 // 2**i, 4 * 2**i), "float32") for i in range(3)]
    decoder = UNetDecoder3D(filters=(8, 4))
    out = to_numpy(decoder(features))
    assert out.shape == (1, 16, 16, 16, 4)
    with pytest.raises(ValueError, match="needs 3 encoder features"):
        decoder(features[:2])
    config = decoder.get_config()
    assert UNetDecoder3D.from_config(config).get_config() == config
