"""metrics: masked per-batch sums against hand-computed values."""

import math

import numpy as np
import pytest

from dfkd_jax import metrics

LOGITS = np.array([[2.0, 1.0, 0.0],    # top-1 = 0
                   [0.0, 3.0, 1.0],    # top-1 = 1
                   [0.0, 0.0, 5.0],    # top-1 = 2
                   [4.0, 0.0, 0.0]],   # top-1 = 0 (padding row)
                  np.float32)
MASK = np.array([1.0, 1.0, 1.0, 0.0], np.float32)


def test_correct():
    labels = np.array([0, 2, 2, 0])
    # rows 0 and 2 correct, row 3 correct but padded -> 2
    assert float(metrics.correct(LOGITS, labels, MASK)) == 2.0
    assert float(metrics.correct(LOGITS, labels, np.ones(4, np.float32))) == 3.0


def test_agreement():
    t = np.array([[0.0, 1.0, 0.0],      # top-1 = 1 (disagrees with row 0)
                  [0.0, 2.0, 0.0],      # 1 (agrees)
                  [0.0, 0.0, 1.0],      # 2 (agrees)
                  [9.0, 0.0, 0.0]],     # 0 (agrees, padded)
                 np.float32)
    assert float(metrics.agreement(LOGITS, t, MASK)) == 2.0


def test_loyalty_by_hand():
    # sample 0: p = q -> JS 0 -> loyalty 1
    # sample 1: p = [1, 0], q = [0, 1] (effectively) -> JS = 1 bit -> loyalty 0
    # sample 2: p = softmax([ln3, 0]) = [.75, .25], q = [.25, .75], m = [.5, .5]
    #   KL(p||m) = .75 log2 1.5 + .25 log2 .5 = .75 * .584963 - .25 = 0.188722 = KL(q||m) -> JS = 0.188722
    #   loyalty = 1 - sqrt(0.188722) = 1 - 0.434422 = 0.565578
    # sample 3: padded
    s = np.array([[0.0, 0.0], [50.0, -50.0], [math.log(3), 0.0], [1.0, -1.0]], np.float32)
    t = np.array([[0.0, 0.0], [-50.0, 50.0], [0.0, math.log(3)], [-1.0, 1.0]], np.float32)
    js = np.asarray(metrics.js_base2(s, t))
    np.testing.assert_allclose(js[:3], [0.0, 1.0, 0.188722], atol=1e-5)
    mask = np.array([1.0, 1.0, 1.0, 0.0], np.float32)
    np.testing.assert_allclose(float(metrics.loyalty(s, t, mask)), 1.0 + 0.0 + 0.565578, atol=1e-4)


def test_summarise():
    out = metrics.summarise([10.0, 40.0, 30.0])
    assert out == {"best": 40.0, "last": 30.0, "mean": 80.0 / 3}
    assert all(math.isnan(v) for v in metrics.summarise([]).values())


def test_calibration_by_hand():
    """Mean max-probability and ECE (Guo et al. 2017) with 2 bins on 4 examples written out."""
    import math

    from dfkd_jax.metrics import calibration
    # max probabilities 0.9, 0.8 (bin (0.5, 1]) and 0.3, 0.4 over 4 classes (bin (0, 0.5])
    def logits_for(p_max, k=4, cls=0):
        rest = (1 - p_max) / (k - 1)
        row = [math.log(rest)] * k
        row[cls] = math.log(p_max)
        return row
    logits = [logits_for(0.9, cls=0), logits_for(0.8, cls=1), logits_for(0.3, cls=2), logits_for(0.4, cls=3)]
    labels = [0, 0, 2, 1]  # correct, wrong, correct, wrong
    out = calibration(logits, labels, bins=2)
    assert out["mean_max_prob"] == pytest.approx((0.9 + 0.8 + 0.3 + 0.4) / 4)
    # bin 2: acc 1/2, conf 0.85; bin 1: acc 1/2, conf 0.35 -> ECE = 0.5 * 0.35 + 0.5 * 0.15
    assert out["ece"] == pytest.approx(0.5 * abs(0.5 - 0.85) + 0.5 * abs(0.5 - 0.35))
    assert out["accuracy"] == 0.5
