"""The README's "API in five lines" runs exactly as written, and tasks check volumes before training."""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest

from keras_ssl3d import ConfigError, Encoder3D, tasks
from keras_ssl3d.data.synthetic import make_brats_like

README = Path(__file__).resolve().parent.parent / "README.md"


def _api_snippet():
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## The API in five lines"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_api_snippet_runs_as_written(tmp_path, monkeypatch):
    code = _api_snippet()
    assert "task.fit(" in code and "Segmenter3D(" in code
    make_brats_like(tmp_path / "my_brats", n_subjects=2, shape=(20, 20, 16), seed=0)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # e.g. the out-of-[0, 1] warning would fail it
        exec(compile(code, str(README), "exec"), namespace)
    assert namespace["volumes"].shape == (2, 32, 32, 32, 4)
    assert (tmp_path / "my-encoder" / "metadata.json").is_file()
    probs = np.asarray(namespace["segmenter"](namespace["volumes"][:1]))
    assert probs.shape == (1, 32, 32, 32, 4)


@pytest.mark.multibackend
def test_task_says_what_to_change_before_training():
    volumes = np.random.default_rng(0).random((2, 16, 16, 16, 4)).astype(np.float32)
    with pytest.raises(ConfigError, match=r"4 channel\(s\), the encoder takes 1: build it with "
                                          r"Encoder3D\(in_channels=4"):
        tasks.Rotation(Encoder3D(in_channels=1, filters=(4, 8))).dataset(volumes)
    jigsaw = tasks.Jigsaw(Encoder3D(in_channels=4, filters=(4,)), input_size=32, grid=2, jitter=1)
    with pytest.raises(ConfigError, match=r"16x16x16, Jigsaw was built for 32x32x32: build it with "
                                          r"Jigsaw\(encoder, input_size=16\)"):
        jigsaw.dataset(volumes)
    rotation = tasks.Rotation(Encoder3D(in_channels=4, filters=(4, 8)))
    with pytest.raises(ConfigError, match="needs equal sides, got 16x16x8"):
        rotation.dataset(volumes[:, :, :, :8])
    with pytest.raises(ConfigError, match=r"shaped \(N, D, H, W, C\), got shape \(2, 16, 16, 4\)"):
        rotation.dataset(volumes[:, 0])
    with pytest.warns(UserWarning, match=r"values lie in \[.*, 255\], not \[0, 1\]"):
        rotation.dataset(volumes * 255 / volumes.max())
    assert rotation.chance_loss == pytest.approx(np.log(10))  # 10 rotation classes in 3D
    assert tasks.Exemplar(Encoder3D(in_channels=4, filters=(4,))).chance_loss is None  # a triplet loss
