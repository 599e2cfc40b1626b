"""Paired comparison of pretrained vs scratch: hand-computed numbers, exact bootstrap, runs.csv read back."""

import itertools
import math

import numpy as np
import pytest

from keras_ssl3d.errors import ConfigError
from keras_ssl3d.finetune.statistics import (compare_to_scratch, format_comparison, paired_comparison,
                                             read_runs_csv)


def test_mean_sd_and_exact_bootstrap_interval():
    pretrained = [0.5, 0.6, 1.0]
    scratch = [0.4, 0.4, 0.4]  # diffs 0.1, 0.2, 0.6
    c = paired_comparison(pretrained, scratch)
    assert c.n == 3
    assert c.mean == pytest.approx(0.3)  # (0.1 + 0.2 + 0.6) / 3
    # sample sd: deviations -0.2, -0.1, 0.3 -> (0.04 + 0.01 + 0.09) / 2 = 0.07
    assert c.sd == pytest.approx(math.sqrt(0.07))
    # The 27 resamples of 3 subsets are equally likely: the exact bootstrap distribution of the mean.
    diffs = np.array([0.1, 0.2, 0.6])
    exact = np.sort([diffs[list(idx)].mean() for idx in itertools.product(range(3), repeat=3)])
    assert exact.size == 27
    for level in (0.95, 0.8):
        tail = (1 - level) / 2
        lo, hi = np.quantile(exact, [tail, 1 - tail], method="inverted_cdf")
        got = paired_comparison(pretrained, scratch, level=level)
        assert got.low == pytest.approx(lo, abs=0.01) and got.high == pytest.approx(hi, abs=0.01)
    # 95 %: 1/27 > 2.5 % of the resamples are all-0.1 (all-0.6), so the interval is [0.1, 0.6]
    assert (c.low, c.high) == (pytest.approx(0.1), pytest.approx(0.6))
    # 80 %: the 10 % point is the second smallest mean, (0.1 + 0.1 + 0.2) / 3
    assert paired_comparison(pretrained, scratch, level=0.8).low == pytest.approx(0.4 / 3)
    assert c.verdict == "better"
    assert format_comparison(c) == "+0.300 ± 0.265 [+0.100, +0.600] better"
    assert paired_comparison(pretrained, scratch) == c  # seed fixed in code


def test_identical_diffs_give_a_zero_width_interval():
    c = paired_comparison([0.3, 0.5, 0.7, 0.9], [0.2, 0.4, 0.6, 0.8])
    assert c.sd == pytest.approx(0.0, abs=1e-12) and c.low == c.high == c.mean
    assert c.mean == pytest.approx(0.1) and c.verdict == "better"


def test_verdict_words():
    assert paired_comparison([0.1, 0.2, 0.15, 0.1], [0.5, 0.6, 0.55, 0.6]).verdict == "worse"
    mixed = paired_comparison([0.6, 0.4, 0.55, 0.45], [0.5, 0.5, 0.5, 0.5])  # diffs +0.1 -0.1 +0.05 -0.05
    assert mixed.low < 0 < mixed.high and mixed.verdict == "not distinguishable"
    assert format_comparison(mixed).endswith("] not distinguishable")


def test_one_subset_and_errors():
    c = paired_comparison([0.7], [0.5])
    assert c.n == 1 and c.mean == pytest.approx(0.2)
    assert math.isnan(c.sd) and math.isnan(c.low) and math.isnan(c.high)
    assert c.verdict == "not distinguishable (one subset)"
    assert format_comparison(c) == "+0.200 not distinguishable (one subset)"
    with pytest.raises(ConfigError, match="2 pretrained and 3 scratch"):
        paired_comparison([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ConfigError, match="non-finite"):
        paired_comparison([0.1, float("nan")], [0.1, 0.2])


RUNS = """label,fraction,repeat,strategy,score,wall_s
scratch,0.5,0,full,0.40,1.0
scratch,0.5,1,full,0.50,1.0
scratch,0.5,2,full,0.60,1.0
enc_a,0.5,0,warmup,0.50,1.0
enc_a,0.5,1,warmup,0.70,1.0
enc_a,0.5,2,warmup,0.90,1.0
scratch,1,0,full,0.70,1.0
scratch,1,1,full,0.60,1.0
scratch,1,2,full,0.80,1.0
enc_a,1,0,warmup,0.65,1.0
enc_a,1,1,warmup,0.65,1.0
enc_a,1,2,warmup,0.75,1.0
"""


def test_statistics_from_a_written_runs_csv(tmp_path):
    from keras_ssl3d.finetune.runner import FinetuneSettings
    from keras_ssl3d.finetune.study import summary_markdown

    (tmp_path / "runs.csv").write_text(RUNS)
    rows = read_runs_csv(tmp_path / "runs.csv")
    assert rows[0]["fraction"] == 0.5 and rows[0]["repeat"] == 0 and rows[0]["score"] == 0.4
    comps = compare_to_scratch(rows)
    assert list(comps) == [("enc_a", 0.5), ("enc_a", 1.0)]
    half, full = comps[("enc_a", 0.5)], comps[("enc_a", 1.0)]
    # 50 %: diffs 0.1, 0.2, 0.3 -> mean 0.2, sd 0.1, every resampled mean > 0
    assert (half.n, half.mean, half.sd) == (3, pytest.approx(0.2), pytest.approx(0.1))
    assert half.low == pytest.approx(0.1) and half.high == pytest.approx(0.3) and half.verdict == "better"
    # 100 %: diffs -0.05, 0.05, -0.05 -> mean -0.05/3, sd sqrt((2 * (1/30)^2 + (1/15)^2) / 2) = 0.0577
    assert full.mean == pytest.approx(-0.05 / 3) and full.sd == pytest.approx(math.sqrt(0.01 / 3))
    assert full.verdict == "not distinguishable"

    summary = summary_markdown(rows, FinetuneSettings(epochs=3, lr=1e-3, warmup_epochs=1), "segmentation")
    # per-fraction scores: enc_a at 50 %: 0.7 ± 0.2 (n=3); scratch 0.5 ± 0.1 (n=3)
    assert "| 50 | 0.5000 ± 0.1000 (n=3) | 0.7000 ± 0.2000 (n=3) |" in summary
    assert "| 50 | enc_a | +0.200 ± 0.100 [+0.100, +0.300] better |" in summary
    assert "| 100 | enc_a | -0.017 ± 0.058 [" in summary and "] not distinguishable |" in summary
    assert "| % labels | scratch (full) | enc_a (warmup) |" in summary  # the strategy each column used


def test_read_runs_csv_errors(tmp_path):
    from keras_ssl3d.errors import DataError

    with pytest.raises(DataError, match="no runs.csv"):
        read_runs_csv(tmp_path / "runs.csv")
    (tmp_path / "runs.csv").write_text("label,fraction\nscratch,0.5\n")
    with pytest.raises(DataError, match="repeat, score"):
        read_runs_csv(tmp_path / "runs.csv")
    (tmp_path / "runs.csv").write_text("label,fraction,repeat,score\nscratch,half,0,0.5\n")
    with pytest.raises(DataError, match="line 2: column fraction"):
        read_runs_csv(tmp_path / "runs.csv")
