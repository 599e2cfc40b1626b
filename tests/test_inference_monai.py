"""Sliding-window inference agrees with `monai.inferers.sliding_window_inference` (same window, overlap, blend).

MONAI is an optional test dependency (the ``test`` extra); without it these tests are skipped.
The predictor is a fake, numpy-only "model" whose output depends on where a voxel sits in its window
and on the window's mean, so a different window placement, padding or weighting changes the result.
"""

import numpy as np
import pytest

from keras_ssl3d.finetune.inference import blend_weights, sliding_window_predict, window_starts

monai = pytest.importorskip("monai", reason="MONAI is not installed (pip install 'keras-ssl3d[test]')")
torch = pytest.importorskip("torch", reason="torch is not installed (MONAI needs it)")
from monai.data.utils import compute_importance_map, dense_patch_slices  # noqa: E402
from monai.inferers import sliding_window_inference  # noqa: E402

# float32 blending of the same numbers in the same order; the Gaussian weights differ only by float32
# rounding of exp() between numpy and torch.
TOLERANCE = dict(rtol=1e-5, atol=1e-6)


class FakePredictor:
    """Two 'class probabilities' per voxel that depend on the voxel's position in its window."""

    def predict_on_batch(self, batch):  # (N, D, H, W, C), as Keras models take it
        batch = np.asarray(batch, dtype=np.float32)
        d, h, w = batch.shape[1:4]
        ramp = (np.arange(d)[:, None, None] + 2 * np.arange(h)[None, :, None] + 3 * np.arange(w)[None, None, :])
        ramp = (ramp / ramp.max() if ramp.max() else ramp).astype(np.float32)[None]
        signal = batch.sum(-1) * (1.0 + ramp) + batch.mean(axis=(1, 2, 3, 4))[:, None, None, None]
        first = 1.0 / (1.0 + np.exp(-signal))
        return np.stack([first, 1.0 - first], axis=-1).astype(np.float32)


def _monai(volume, window, overlap, blend, batch_size=1):
    predictor = FakePredictor()

    def channels_first(x):  # MONAI: (N, C, D, H, W) tensors
        out = predictor.predict_on_batch(x.permute(0, 2, 3, 4, 1).numpy())
        return torch.from_numpy(out).permute(0, 4, 1, 2, 3)

    x = torch.from_numpy(np.ascontiguousarray(np.moveaxis(volume, -1, 0))[None])
    out = sliding_window_inference(x, window, batch_size, channels_first, overlap=overlap, mode=blend)
    return np.moveaxis(out[0].numpy(), 0, -1)


@pytest.mark.parametrize("window", [(8, 8, 8), (7, 6, 5), (15, 9, 4)])
def test_gaussian_weights_are_monai_importance_map(window):
    expected = compute_importance_map(window, mode="gaussian", sigma_scale=0.125).numpy()
    np.testing.assert_allclose(blend_weights(window, "gaussian"), expected, rtol=1e-6, atol=0)
    np.testing.assert_array_equal(blend_weights(window, "constant"),
                                  compute_importance_map(window, mode="constant").numpy())


def test_even_window_weights_are_not_rescaled_to_one():
    # MONAI 1.6 keeps the peak of an even-sized Gaussian below 1 and floors the weights at 1e-3.
    g = blend_weights((8, 8, 8))
    assert g.max() == pytest.approx(np.exp(-0.5 * (0.5 / 1.0) ** 2) ** 3, rel=1e-6)
    assert g.min() == pytest.approx(1e-3)


@pytest.mark.parametrize("size,window,overlap", [
    (16, 8, 0.5), (13, 8, 0.5), (20, 15, 0.5), (20, 15, 0.25), (30, 10, 0.6), (9, 8, 0.9), (17, 5, 0.0),
])
def test_window_starts_are_monai_patch_starts(size, window, overlap):
    step = max(1, int(window * (1 - overlap)))
    monai_starts = sorted({s[0].start for s in dense_patch_slices((size,), (window,), (step,))})
    assert window_starts(size, window, overlap) == monai_starts


def test_the_step_is_floored_not_rounded():
    # window 15, overlap 0.5: step int(7.5) = 7 (MONAI), not round(7.5) = 8 (less overlap than asked).
    assert window_starts(29, 15, 0.5) == [0, 7, 14]


@pytest.mark.parametrize("blend", ["constant", "gaussian"])
@pytest.mark.parametrize("shape,window,overlap", [
    ((13, 9, 17), (8, 8, 8), 0.5),       # uneven coverage, last window shifted back
    ((12, 10, 11), (7, 6, 5), 0.25),     # odd and even windows, odd step
    ((29, 9, 9), (15, 4, 9), 0.5),       # window 15: step 7 (floored, not 8), and a window equal to the axis
    ((5, 8, 3), (8, 8, 8), 0.5),         # smaller than the window: symmetric zero padding
    ((6, 13, 4), (9, 6, 7), 0.6),        # padding on two axes, sliding on the third
])
def test_matches_monai_sliding_window_inference(blend, shape, window, overlap):
    rng = np.random.default_rng(sum(shape) + len(blend))
    volume = rng.normal(size=(*shape, 2)).astype(np.float32)
    ours = sliding_window_predict(FakePredictor(), volume, window, overlap=overlap, blend=blend, batch_size=3)
    expected = _monai(volume, window, overlap, blend, batch_size=3)
    assert ours.shape == expected.shape == (*shape, 2)
    np.testing.assert_allclose(ours, expected, **TOLERANCE)


def test_padding_is_symmetric_as_in_monai():
    # A volume of 5 voxels in a window of 8 sits at offsets 1..5 of the window (1 voxel before, 2 after):
    # the fake predictor's position ramp makes the offset visible in the output.
    volume = np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype(np.float32)
    ours = sliding_window_predict(FakePredictor(), volume, (8, 8, 8), blend="constant")
    window = np.zeros((8, 8, 8, 1), dtype=np.float32)
    window[1:6] = volume
    direct = FakePredictor().predict_on_batch(window[None])[0, 1:6]
    np.testing.assert_allclose(ours, direct, **TOLERANCE)
    np.testing.assert_allclose(ours, _monai(volume, (8, 8, 8), 0.5, "constant"), **TOLERANCE)
