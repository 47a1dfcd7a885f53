"""dashboards.stats: DeLong against references computed other ways, bootstrap, operating
points, Holm, paired tests, calibration — each checked by hand or by brute force."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from sklearn.metrics import roc_auc_score, roc_curve

from dashboards import roc, stats


def _data(n: int = 120, seed: int = 0, ties: bool = False):
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.4).astype(int)
    a = y * 1.2 + rng.normal(0, 1, n)
    b = 0.6 * a + y * 0.3 + rng.normal(0, 0.8, n)  # correlated with a
    if ties:
        a, b = np.round(a, 1), np.round(b, 1)
    return y, a, b


def _delong_pairwise(y, scores):
    """DeLong 1988 straight from the definition: psi(x, y) over every (positive, negative)
    pair, structural components as row/column means — O(m n), no ranks."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    aucs = psi.mean(axis=(1, 2))
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)
    m, n = pos.shape[1], neg.shape[1]
    return aucs, np.cov(v10) / m + np.cov(v01) / n


@pytest.mark.parametrize("ties", [False, True])
def test_delong_matches_the_pairwise_definition_and_sklearn(ties):
    y, a, b = _data(ties=ties)
    aucs, cov = stats.delong_cov(y, np.vstack([a, b]))
    ref_aucs, ref_cov = _delong_pairwise(y, np.vstack([a, b]))
    np.testing.assert_allclose(aucs, ref_aucs, atol=1e-12)
    np.testing.assert_allclose(cov, ref_cov, atol=1e-12)
    assert aucs[0] == pytest.approx(roc_auc_score(y, a), abs=1e-12)
    assert stats.auc(y, b) == pytest.approx(roc_auc_score(y, b), abs=1e-12)


def test_delong_variance_of_the_difference_agrees_with_a_paired_bootstrap():
    y, a, b = _data(n=300, seed=3)
    r = stats.delong_test(y, a, b)
    rng = np.random.default_rng(0)
    # the pairwise kernel psi(positive i, negative j) of each model; a resample's AUC is the
    # mean of psi over its drawn rows and columns (stratified, paired across the two models)
    psi = [(s[y == 1][:, None] > s[y == 0][None]) + 0.5 * (s[y == 1][:, None] == s[y == 0][None])
           for s in (a, b)]
    m, n = psi[0].shape
    diffs = []
    for _ in range(2000):
        i, j = rng.integers(0, m, m), rng.integers(0, n, n)
        diffs.append(psi[0][np.ix_(i, j)].mean() - psi[1][np.ix_(i, j)].mean())
    assert r.diff == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b), abs=1e-12)
    assert r.se == pytest.approx(np.std(diffs, ddof=1), rel=0.1)
    assert r.p_value == pytest.approx(2 * sps.norm.sf(abs(r.diff / r.se)))
    lo, hi = r.ci()
    assert lo < r.diff < hi


def test_delong_single_auc_variance_agrees_with_hanley_mcneil_order_of_magnitude():
    # Hanley & McNeil (1982) approximate the same variance from the AUC alone
    y, a, _ = _data(n=400, seed=5)
    aucs, cov = stats.delong_cov(y, a[None])
    A, m, n = aucs[0], y.sum(), (1 - y).sum()
    q1, q2 = A / (2 - A), 2 * A * A / (1 + A)
    hm = (A * (1 - A) + (m - 1) * (q1 - A * A) + (n - 1) * (q2 - A * A)) / (m * n)
    assert cov[0, 0] == pytest.approx(hm, rel=0.25)


def test_delong_of_identical_scores_is_no_difference():
    y, a, _ = _data()
    r = stats.delong_test(y, a, a.copy())
    assert (r.diff, r.se, r.p_value) == (0.0, 0.0, 1.0)


def test_combined_delong_is_inverse_variance_weighted():
    r1 = stats.DelongResult(0.9, 0.8, 0.1, 0.05, 2.0, 0.0455, 50)
    r2 = stats.DelongResult(0.85, 0.8, 0.05, 0.1, 0.5, 0.617, 50)
    c = stats.combine_delong([r1, r2])
    w1, w2 = 1 / 0.05 ** 2, 1 / 0.1 ** 2
    assert c.diff == pytest.approx((w1 * 0.1 + w2 * 0.05) / (w1 + w2))
    assert c.se == pytest.approx((w1 + w2) ** -0.5)
    assert c.n == 100
    same = stats.combine_delong([r1, r1])
    assert same.diff == pytest.approx(0.1) and same.se == pytest.approx(0.05 / np.sqrt(2))


def _brute_force_points(y, p, at=0.9):
    fpr, tpr, _ = roc_curve(y, p, drop_intermediate=False)
    return tpr[1 - fpr >= at - 1e-12].max(), (1 - fpr[tpr >= at - 1e-12]).max()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ties", [False, True])
def test_operating_points_equal_a_brute_force_roc_search(seed, ties):
    y, a, _ = _data(n=97, seed=seed, ties=ties)
    pos, neg = a[y == 1], a[y == 0]
    sens, spec = _brute_force_points(y, a)
    assert float(stats.sens_at_spec(pos, neg, 0.9)) == pytest.approx(sens)
    assert float(stats.spec_at_sens(pos, neg, 0.9)) == pytest.approx(spec)


def test_bootstrap_is_seeded_stratified_and_brackets_the_estimate():
    y, a, _ = _data(n=150)
    b1 = stats.bootstrap_metrics(y, a, n_boot=2000, seed=7)
    b2 = stats.bootstrap_metrics(y, a, n_boot=2000, seed=7)
    assert b1 == b2
    assert b1.estimate["auc"] == pytest.approx(roc_auc_score(y, a))
    for k in ("auc", "sens_at_spec", "spec_at_sens"):
        assert b1.low[k] <= b1.estimate[k] <= b1.high[k]
    assert stats.bootstrap_metrics(y, a, n_boot=2000, seed=8).low != b1.low
    # one positive only: every stratified resample still has both classes
    y1 = np.r_[1, np.zeros(20, int)]
    assert stats.bootstrap_metrics(y1, np.linspace(1, 0, 21), n_boot=50).low["auc"] == 1.0


def test_holm_by_hand():
    np.testing.assert_allclose(stats.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(stats.holm([0.5, np.nan, 0.01]), [0.5, np.nan, 0.02])
    assert stats.holm([0.9, 0.8]).tolist() == [1.0, 1.0]


def test_paired_tests_equal_scipy_and_handle_degenerate_cases():
    a = np.array([0.90, 0.92, 0.95, 0.91, 0.93])
    b = np.array([0.85, 0.91, 0.90, 0.92, 0.88])
    t_p, w_p = stats.paired_tests(a, b)
    assert t_p == pytest.approx(sps.ttest_rel(a, b).pvalue)
    assert w_p == pytest.approx(sps.wilcoxon(a, b).pvalue)
    assert stats.paired_tests(a, a) == (1.0, 1.0)
    assert all(np.isnan(stats.paired_tests(a[:1], b[:1])))
    t_const, _ = stats.paired_tests(np.array([0.7, 0.75]), np.array([0.9, 0.95]))
    assert np.isnan(t_const)  # identical non-zero differences: t undefined, not p = 0


def test_calibration_by_hand():
    y, p = np.array([0, 1]), np.array([0.2, 0.9])
    assert stats.brier(y, p) == pytest.approx((0.04 + 0.01) / 2)
    assert stats.ece(y, p) == pytest.approx(0.5 * 0.2 + 0.5 * 0.1)
    r = stats.reliability(np.array([0, 1, 1]), np.array([0.05, 1.0, 0.95]))
    assert r["count"].tolist() == [1] + [0] * 8 + [2]
    assert r["fraction_positive"][-1] == 1.0 and r["mean_predicted"][-1] == pytest.approx(0.975)
    assert stats.ece(np.array([0, 1]), np.array([0.0, 1.0])) == 0.0


def test_mean_roc_on_a_common_grid():
    y = np.array([0, 0, 1, 1])
    perfect = pd.DataFrame({"variant": "A", "split": 0, "label": y,
                            "p_malignant": [0.1, 0.2, 0.8, 0.9]})
    reversed_ = perfect.assign(split=1, p_malignant=[0.9, 0.8, 0.2, 0.1])
    curves = roc.mean_roc(pd.concat([perfect, reversed_]), grid_points=11)
    assert curves["fpr"].tolist() == pytest.approx(np.linspace(0, 1, 11).tolist())
    one = roc.mean_roc(perfect, grid_points=11)
    assert one["tpr_mean"].tolist() == [1.0] * 11 and one["tpr_std"].eq(0).all()
    # perfect (TPR 1 everywhere) and reversed (TPR 0 until FPR 1): mean 0.5, std 0.707
    assert curves["tpr_mean"].iloc[5] == pytest.approx(0.5)
    assert curves["tpr_std"].iloc[5] == pytest.approx(np.sqrt(0.5))
    assert curves["tpr_high"].max() <= 1 and curves["tpr_low"].min() >= 0
    s = roc.auc_summary(pd.concat([perfect, reversed_]))
    assert s.loc[0, "auc_mean"] == 0.5 and s.loc[0, "splits"] == 2


# ----------------------------------------------------------------------------- unit of analysis


def _views(n_lesions: int = 40, seed: int = 0, view_noise: float = 0.8, splits: int = 1):
    """Known per-view predictions: two views per lesion, two lesions per patient."""
    rng = np.random.default_rng(seed)
    frames = []
    for k in range(splits):
        y = (np.arange(n_lesions) % 5 < 2).astype(int)
        lesion = 1.2 * y + rng.normal(0, 1, n_lesions)
        p = 1 / (1 + np.exp(-(np.repeat(lesion, 2) + rng.normal(0, view_noise, 2 * n_lesions))))
        frames.append(pd.DataFrame({
            "variant": "FE", "split": k, "seed": 0,
            "sample_id": [f"s{k}-{i}" for i in range(2 * n_lesions)],
            "cluster": [f"l{k}-{i // 2:03d}" for i in range(2 * n_lesions)],
            "patient": [f"p{k}-{i // 4:03d}" for i in range(2 * n_lesions)],
            "label": np.repeat(y, 2), "p_malignant": p}))
    return pd.concat(frames, ignore_index=True)


def test_combine_averages_the_views_of_a_lesion_or_a_patient():
    from dashboards import units

    v = _views(n_lesions=10)
    lesions = units.combine(v, "lesion")
    assert len(lesions) == 10 and (lesions["views"] == 2).all()
    p = v["p_malignant"].to_numpy()
    np.testing.assert_allclose(lesions["p_malignant"], (p[::2] + p[1::2]) / 2)
    np.testing.assert_array_equal(lesions["label"], v["label"].to_numpy()[::2])
    patients = units.combine(v, "patient")  # lesion i and i+1 share a patient; classes apart
    assert set(patients["cluster"]) == set(v["patient"])
    assert len(patients) == v.groupby(["patient", "label"]).ngroups
    views = units.combine(v, "view")
    assert len(views) == 20 and list(views["cluster"]) == list(v["cluster"])
    with pytest.raises(ValueError, match="unit must be"):
        units.combine(v, "image")


def test_cluster_weights_are_stratified_seeded_and_weighted_auc_equals_replication():
    labels = np.array([1] * 7 + [0] * 13)
    w = stats.cluster_weights(labels, 300, seed=4)
    assert w.shape == (300, 20)
    np.testing.assert_array_equal(w[:, labels == 1].sum(axis=1), 7)  # class mix kept
    np.testing.assert_array_equal(w[:, labels == 0].sum(axis=1), 13)
    np.testing.assert_array_equal(w, stats.cluster_weights(labels, 300, seed=4))
    rng = np.random.default_rng(1)
    p = np.round(rng.random(20), 1)  # ties
    got = stats.weighted_auc(labels, p, w[:25])
    for b in range(25):
        reps = w[b].astype(int)
        assert got[b] == pytest.approx(roc_auc_score(np.repeat(labels, reps),
                                                     np.repeat(p, reps)), abs=1e-12)
    acc = stats.weighted_accuracy(labels, p, w[:5])
    for b in range(5):
        reps = w[b].astype(int)
        assert acc[b] == pytest.approx(((np.repeat(p, reps) >= 0.5) == np.repeat(labels,
                                                                                    reps)).mean())


def test_copied_views_do_not_narrow_the_cluster_bootstrap_ci_but_do_narrow_a_naive_one():
    """Two identical views per lesion: the view-level cluster bootstrap gives the lesion-level
    interval exactly; a bootstrap of views as independent cases is about 1/sqrt(2) as wide."""
    from dashboards import units

    v = _views(n_lesions=60, view_noise=0.0)
    view_cases, lesion_cases = units.combine(v, "view"), units.combine(v, "lesion")
    resampler = units.Resampler.for_cases(lesion_cases, 2000, seed=0)
    by_view = units.mean_over_runs(view_cases, units.auc, resampler)
    by_lesion = units.mean_over_runs(lesion_cases, units.auc, resampler)
    assert (by_view.value, by_view.low, by_view.high) == pytest.approx(
        (by_lesion.value, by_lesion.low, by_lesion.high), abs=1e-12)
    naive = stats.bootstrap_metrics(v["label"].to_numpy(), v["p_malignant"].to_numpy(),
                                    n_boot=2000, seed=0)
    ratio = (naive.high["auc"] - naive.low["auc"]) / (by_lesion.high - by_lesion.low)
    assert 0.6 < ratio < 0.85  # ≈ 0.71: copies counted as independent cases


def test_mean_over_runs_ci_is_of_the_mean_over_folds():
    from dashboards import units

    cases = units.combine(_views(n_lesions=30, splits=3, seed=5), "lesion")
    r = units.Resampler.for_cases(cases, 500, seed=0)
    est = units.mean_over_runs(cases, units.auc, r)
    per_fold = [roc_auc_score(g["label"], g["p_malignant"]) for _, g in cases.groupby("split")]
    assert est.value == pytest.approx(np.mean(per_fold)) and len(est.per_run) == 3
    assert est.low < est.value < est.high
    pooled = units.mean_over_runs(cases.assign(split=0), units.auc, r)  # one pooled "run"
    assert pooled.value == pytest.approx(roc_auc_score(cases["label"], cases["p_malignant"]))


def test_corrected_resampled_t_test_by_hand():
    a = np.array([0.80, 0.84, 0.79, 0.86, 0.83])
    b = np.array([0.78, 0.80, 0.80, 0.81, 0.79])
    d = a - b
    t = d.mean() / np.sqrt((1 / 5 + 0.25) * d.var(ddof=1))
    assert stats.corrected_t_test(a, b, 0.25) == pytest.approx(2 * sps.t.sf(abs(t), 4))
    plain = sps.ttest_rel(a, b).pvalue
    assert stats.corrected_t_test(a, b, 0.25) > plain  # overlap makes it more cautious
    assert stats.corrected_t_test(a, b, 0.0) == pytest.approx(plain)
    assert stats.corrected_t_test(a, a, 0.25) == 1.0
    assert np.isnan(stats.corrected_t_test(a[:1], b[:1], 0.25))


def test_validation_thresholds_by_hand():
    from dashboards import units

    val = pd.DataFrame({"split": 0, "seed": 0, "label": [0, 0, 0, 0, 1, 1, 1],
                        "p_malignant": [0.1, 0.2, 0.3, 0.6, 0.4, 0.7, 0.9]})
    t = units.validation_thresholds(val, at=0.75)
    assert t["youden"][(0, 0)] == 0.4  # sens 1, spec 3/4: J 0.75 (0.7: 2/3 + 1 - 1 = 0.67)
    assert t["spec90"][(0, 0)] == 0.4  # lowest threshold with specificity >= 0.75
    assert t["sens90"][(0, 0)] == 0.4  # highest threshold with sensitivity >= 0.75
