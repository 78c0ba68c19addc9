"""mpbench.report.stats against answers computed independently of scipy (R, by hand)."""

import math

import numpy as np
import pytest

from mpbench.report.stats import Comparison, compare, correct, holm, rank_with_ties

# Student's sleep data (Cushny & Peebles 1905), R's `sleep` dataset:
# extra hours of sleep for 10 patients under drug 1 and drug 2.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
IDS = list(range(1, 11))


def test_sleep_paired_matches_r():
    # R: t.test(extra[group==1], extra[group==2], paired=TRUE)
    # t = -4.0621, df = 9, p-value = 0.002833,
    # 95% CI -2.4598858 -0.7001142, mean difference -1.58
    c = compare(SLEEP_1, SLEEP_2, seeds_a=IDS, seeds_b=IDS)
    assert c.test == "paired" and c.n_pairs == 10
    assert c.t == pytest.approx(-4.0621, abs=1e-4)
    assert c.df == 9
    assert c.p_value == pytest.approx(0.002833, abs=1e-6)
    assert c.diff == pytest.approx(-1.58)
    assert c.ci_low == pytest.approx(-2.4598858, abs=1e-6)
    assert c.ci_high == pytest.approx(-0.7001142, abs=1e-6)
    assert c.significant
    # d = a - b = [-1.2,-2.4,-1.3,-1.3,0,-1,-1.8,-0.8,-4.6,-1.4]: 0 wins, 1 tie
    assert c.p_a_beats_b == pytest.approx(0.5 / 10)


def test_sleep_welch_matches_r():
    # R: t.test(extra ~ group, data = sleep)   (Welch is R's default)
    # t = -1.8608, df = 17.776, p-value = 0.07939,
    # 95% CI -3.3654832 0.2054832, means 0.75 and 2.33
    c = compare(SLEEP_1, SLEEP_2)
    assert c.test == "welch" and c.n_pairs == 0
    assert c.t == pytest.approx(-1.8608, abs=1e-4)
    assert c.df == pytest.approx(17.776, abs=1e-3)
    assert c.p_value == pytest.approx(0.07939, abs=1e-5)
    assert (c.mean_a, c.mean_b) == pytest.approx((0.75, 2.33))
    assert c.diff == pytest.approx(-1.58)
    assert c.ci_low == pytest.approx(-3.3654832, abs=1e-6)
    assert c.ci_high == pytest.approx(0.2054832, abs=1e-6)
    assert not c.significant


def test_paired_ci_hand_computed():
    # Differences d = [4,-2,4,-2,1,1,1,1,1,1] / 100, n = 10.
    # mean = (4-2+4-2+6)/10 /100 = 0.01
    # deviations*100 = [3,-3,3,-3,0,...]: sum of squares 36, var 36/9 = 4
    # -> sd = 0.02, se = 0.02/sqrt(10) = 0.0063246, t = 0.01/se = 1.5811
    # table t_{0.975,9} = 2.262 -> half width 2.262 * 0.0063246 = 0.014306
    # CI = [0.01 - 0.014306, 0.01 + 0.014306] = [-0.004306, 0.024306]
    d = np.array([4, -2, 4, -2, 1, 1, 1, 1, 1, 1]) / 100
    b = np.linspace(0.70, 0.79, 10)
    a = b + d
    c = compare(a, b, seeds_a=IDS, seeds_b=IDS)
    assert c.test == "paired"
    assert c.diff == pytest.approx(0.01)
    assert c.t == pytest.approx(1.5811, abs=1e-4)
    assert c.ci_high - c.ci_low == pytest.approx(2 * 0.014306, abs=1e-5)
    assert c.ci_low == pytest.approx(-0.004306, abs=1e-5)
    assert c.ci_low < 0.01 < c.ci_high
    assert not c.significant  # CI contains 0
    # 99% interval is wider: t_{0.995,9} = 3.250 -> half width 0.020555
    c99 = compare(a, b, seeds_a=IDS, seeds_b=IDS, level=0.01)
    assert (c99.ci_high - c99.ci_low) / 2 == pytest.approx(0.020555, abs=1e-5)


@pytest.mark.parametrize("paired", [True, False])
def test_ci_coverage(paired):
    # The 95% CI should contain the true mean difference ~95% of the time.
    # 2000 trials: sd of coverage = sqrt(.95*.05/2000) = 0.0049; allow 4 sd.
    rng = np.random.default_rng(0)
    true_diff, hits, trials = 0.01, 0, 2000
    for _ in range(trials):
        if paired:
            common = rng.normal(0.75, 0.05, 5)  # shared seed effect
            a = common + true_diff + rng.normal(0, 0.01, 5)
            b = common + rng.normal(0, 0.01, 5)
            c = compare(a, b, seeds_a=range(5), seeds_b=range(5))
        else:
            a = rng.normal(0.75 + true_diff, 0.01, 5)
            b = rng.normal(0.75, 0.02, 8)
            c = compare(a, b)
        assert c.test == ("paired" if paired else "welch")
        hits += c.ci_low <= true_diff <= c.ci_high
    assert 0.93 <= hits / trials <= 0.97


@pytest.mark.parametrize("seeded", [True, False])
def test_identical_constant_samples(seeded):
    # scipy yields NaN (0/0) here; the exact rank test of no difference: p = 1, no t interval.
    kw = dict(seeds_a=[1, 2, 3], seeds_b=[1, 2, 3]) if seeded else {}
    c = compare([0.8] * 3, [0.8] * 3, **kw)
    assert c.test == ("paired" if seeded else "welch")
    assert c.p_value == 1.0 and c.diff == 0.0
    assert math.isnan(c.ci_low) and math.isnan(c.ci_high)
    assert not c.significant
    assert c.p_a_beats_b == 0.5  # every comparison is a tie


def test_identical_varied_samples():
    c = compare([0.7, 0.8, 0.9], [0.7, 0.8, 0.9])
    assert c.p_value == pytest.approx(1.0) and c.t == 0.0
    assert c.p_a_beats_b == pytest.approx(0.5)


@pytest.mark.parametrize("seeded,exact,p", [
    # paired: 3 differences all > 0, sign test p = 2 / 2^3
    (True, "sign", 0.25),
    # unpaired: every A above every B, exact Mann-Whitney p = 2 / C(6, 3) = 2 / 20
    (False, "mann-whitney", 0.1),
])
def test_zero_variance_different_means(seeded, exact, p):
    # t is undefined (sd 0): an exact rank test, never p = 0 (was p = 0, "significant")
    kw = dict(seeds_a=[1, 2, 3], seeds_b=[1, 2, 3]) if seeded else {}
    c = compare([0.9] * 3, [0.8] * 3, **kw)
    assert c.exact == exact and c.p_value == pytest.approx(p) and not c.significant
    assert c.diff == pytest.approx(0.1)
    assert math.isnan(c.ci_low) and math.isnan(c.ci_high)
    assert c.p_a_beats_b == 1.0


def test_zero_spread_examples_of_the_issue():
    # compare([90, 90], [89.99, 89.99]) was "significant" (p = 0)
    c = compare([90, 90], [89.99, 89.99])
    assert (c.test, c.exact) == ("welch", "mann-whitney")
    assert c.p_value == pytest.approx(2 / 6) and not c.significant  # 2 / C(4, 2)
    c = compare([90, 90], [89.99, 89.99], seeds_a=[0, 1], seeds_b=[0, 1])
    assert (c.test, c.exact) == ("paired", "sign")
    assert c.p_value == pytest.approx(2 / 2**2) and not c.significant
    # the most 5 agreeing seeds can give: 2 / 2^5 = 0.0625, still above 0.05
    c = compare([90.0] * 5, [89.0] * 5, seeds_a=range(5), seeds_b=range(5))
    assert c.p_value == pytest.approx(0.0625)
    # and 2 seeds do not give a star: the tie stays a tie
    assert rank_with_ties({"A": [90, 90], "B": [89.99, 89.99]}) == ["A", "B"]
    assert rank_with_ties({"A": [90, 90], "B": [89.99, 89.99]},
                          seeds={"A": [0, 1], "B": [0, 1]}) == ["A", "B"]


def test_differences_equal_up_to_float_rounding_have_no_spread():
    # 94.91 - 94.54 and 87.69 - 87.32 (0.37 each) differ in their last bits; a paired t test
    # on that gives t = 5e13, p = 1e-14; it is no spread: sign test, p = 2 / 2^2
    a, b = [94.91, 87.69], [94.54, 87.32]
    d = [x - y for x, y in zip(a, b)]
    assert max(d) != min(d)  # the float noise this test is about
    c = compare(a, b, seeds_a=[0, 1], seeds_b=[0, 1])
    assert c.exact == "sign" and c.p_value == pytest.approx(0.5)


def test_one_constant_side_is_still_a_welch_t_test():
    # only A is constant: se > 0, so Welch's t is defined (the rank fallback is for both).
    # By hand: var_b = 7/3, se^2 = 7/9, t = (2/3) / sqrt(7/9), t^2 = 4/7, df = n_b - 1 = 2;
    # for df = 2, P(|T| > t) = 1 - t / sqrt(2 + t^2) = 1 - sqrt(2) / 3.
    c = compare([90.0, 90.0, 90.0], [88.0, 89.0, 91.0])
    assert c.test == "welch" and c.exact == ""
    assert c.df == pytest.approx(2.0)
    assert c.p_value == pytest.approx(1 - math.sqrt(2) / 3)
    assert not math.isnan(c.ci_low)
    c = compare([88.0, 89.0, 91.0], [90.0, 90.0, 90.0])  # and the other side
    assert c.exact == "" and c.p_value == pytest.approx(1 - math.sqrt(2) / 3)


def test_holm_against_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 (m = 4): 4 x 0.005 = 0.02, 3 x 0.01 = 0.03,
    # 2 x 0.03 = 0.06, max(0.06, 1 x 0.04) = 0.06; back in the given order
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.6, 0.7]) == [1.0, 1.0]  # capped at 1, kept monotone
    assert holm([0.02]) == [0.02]  # a family of one is not corrected
    out = holm([0.01, float("nan"), 0.04])  # NaN (no test) is not counted in m
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.04)


def test_holm_against_statsmodels():
    multipletests = pytest.importorskip("statsmodels.stats.multitest").multipletests
    ps = [0.001, 0.2, 0.013, 0.04, 0.03, 0.5]
    assert holm(ps) == pytest.approx(list(multipletests(ps, method="holm")[1]))


def test_correct_sets_adjusted_p_and_significance():
    family = {"B": compare([0.9, 0.91, 0.92], [0.85, 0.86, 0.88]),
              "C": compare([0.9, 0.91, 0.92], [0.88, 0.905, 0.89])}
    raw = {k: c.p_value for k, c in family.items()}
    fixed = correct(family, "holm")
    lo, hi = sorted(raw, key=raw.get)
    assert fixed[lo].p_adjusted == pytest.approx(min(1.0, 2 * raw[lo]))
    assert fixed[hi].p_adjusted == pytest.approx(max(min(1.0, 2 * raw[lo]), raw[hi]))
    assert all(fixed[k].significant == (fixed[k].p_adjusted < 0.05) for k in fixed)
    assert all(fixed[k].p_value == raw[k] and fixed[k].correction == "holm" for k in fixed)
    none = correct(family, "none")
    assert all(none[k].p_adjusted == raw[k] for k in none)
    with pytest.raises(ValueError):
        correct(family, "bonferroni")


def test_huge_separation():
    # diff 0.8, each var 0.00025, se = sqrt(2*0.00025/5) = 0.01, t = 80, df = 8
    a = [0.90, 0.91, 0.92, 0.93, 0.94]
    b = [0.10, 0.11, 0.12, 0.13, 0.14]
    c = compare(a, b)
    assert c.t == pytest.approx(80.0) and c.df == pytest.approx(8.0)
    assert c.p_value < 1e-10 and c.significant
    assert c.p_a_beats_b == 1.0
    assert compare(b, a).p_a_beats_b == 0.0


@pytest.mark.parametrize(
    "a, b",
    [([0.9], [0.8, 0.7]), ([0.9, 0.8], [0.7]), ([], [0.8, 0.7]), ([], [])],
)
def test_fewer_than_two_seeds(a, b):
    c = compare(a, b)
    assert c.test == "none"
    assert "fewer than 2 seeds" in c.reason
    assert all(math.isnan(x) for x in (c.p_value, c.ci_low, c.ci_high))
    assert not c.significant


def test_one_shared_seed_falls_back_to_welch():
    c = compare([0.7, 0.8], [0.6, 0.9], seeds_a=[1, 2], seeds_b=[2, 3])
    assert c.test == "welch" and c.n_pairs == 1
    # one shared seed and one run on a side: nothing to test
    c = compare([0.7, 0.8], [0.6], seeds_a=[1, 2], seeds_b=[2])
    assert c.test == "none" and c.n_pairs == 1


def test_pairing_follows_seeds_not_position():
    a, seeds_a = [0.71, 0.72, 0.73, 0.74], [1, 2, 3, 4]
    b, seeds_b = [0.735, 0.725, 0.715, 0.705], [4, 3, 2, 1]  # b = a - 0.005 seedwise
    c = compare(a, b, seeds_a=seeds_a, seeds_b=seeds_b)
    assert c.test == "paired" and c.diff == pytest.approx(0.005)
    assert c.p_a_beats_b == 1.0


def test_paired_only_uses_shared_seeds():
    c = compare([0.7, 0.8, 0.99], [0.6, 0.75], seeds_a=[1, 2, 3], seeds_b=[1, 2])
    assert c.test == "paired" and c.n_pairs == 2 and c.n_a == 3
    assert c.diff == pytest.approx(((0.7 - 0.6) + (0.8 - 0.75)) / 2)
    assert c.mean_a == pytest.approx((0.7 + 0.8 + 0.99) / 3)  # means use all runs


def test_paired_p_beats_with_ties():
    # d = [1, 0, -1, 1]: wins 2, tie 1 -> (2 + 0.5) / 4 = 0.625
    c = compare([1, 2, 3, 4], [0, 2, 4, 3], seeds_a=IDS[:4], seeds_b=IDS[:4])
    assert c.p_a_beats_b == pytest.approx(0.625)


def test_mann_whitney_common_language_hand():
    # a = [3,5,7], b = [1,5,6]; count pairs a_i > b_j, ties 1/2:
    # 3: beats 1                -> 1
    # 5: beats 1, ties 5        -> 1.5
    # 7: beats 1, 5, 6          -> 3      total 5.5 of 9 pairs
    c = compare([3, 5, 7], [1, 5, 6])
    assert c.p_a_beats_b == pytest.approx(5.5 / 9)
    assert compare([1, 5, 6], [3, 5, 7]).p_a_beats_b == pytest.approx(3.5 / 9)


def test_input_validation():
    with pytest.raises(ValueError):
        compare([0.1, float("nan")], [0.2, 0.3])
    with pytest.raises(ValueError):
        compare([0.1, 0.2], [0.2, 0.3], seeds_a=[1, 1], seeds_b=[1, 2])
    with pytest.raises(ValueError):
        compare([0.1, 0.2], [0.2, 0.3], seeds_a=[1], seeds_b=[1, 2])
    with pytest.raises(ValueError):
        compare([0.1, 0.2], [0.2, 0.3], level=0)


def test_comparison_is_frozen():
    c = compare([0.1, 0.2], [0.3, 0.4])
    assert isinstance(c, Comparison)
    with pytest.raises(AttributeError):
        c.p_value = 0.5  # type: ignore[misc]


def test_rank_clear_winner():
    groups = {
        "A": [0.90, 0.91, 0.92, 0.93, 0.94],
        "B": [0.80, 0.81, 0.82, 0.83, 0.84],
        "C": [0.10, 0.11, 0.12],
    }
    assert rank_with_ties(groups) == ["A"]


def test_rank_tie_keeps_not_significantly_worse():
    groups = {
        "A": [0.80, 0.85, 0.90],  # best mean 0.85
        "B": [0.78, 0.84, 0.89],  # noisy, close: tied
        "C": [0.10, 0.11, 0.12],  # clearly worse: excluded
        "D": [0.5],  # one run: cannot be shown worse -> tied
    }
    assert rank_with_ties(groups) == ["A", "B", "D"]


def test_rank_edge_cases():
    assert rank_with_ties({}) == []
    assert rank_with_ties({"A": [0.5], "E": []}) == ["A"]
    # paired via seeds: a small, consistent per-seed gap (0.001, 0.002, 0.0015: t = 5.196,
    # df 2, p = 0.035) is significant; unpaired it is not
    groups = {"A": [0.801, 0.852, 0.9015], "B": [0.800, 0.850, 0.900]}
    assert rank_with_ties(groups) == ["A", "B"]
    seeds = {"A": [1, 2, 3], "B": [1, 2, 3]}
    assert rank_with_ties(groups, seeds=seeds) == ["A"]


def test_star_needs_every_row_beaten():
    # the issue's example: A is clearly ahead of the runner-up B, but A vs C has p = 0.75
    groups = {"A": [92, 92.1, 91.9], "B": [91, 91.2, 90.9], "C": [85, 96, 91.5]}
    assert compare(groups["A"], groups["C"]).p_value == pytest.approx(0.75, abs=0.01)
    assert compare(groups["A"], groups["B"]).p_value < 0.05 / 2  # beaten even after Holm
    assert rank_with_ties(groups) == ["A", "C"]
    assert rank_with_ties(groups, correction="none") == ["A", "C"]


def test_a_one_seed_row_can_be_neither_beaten_nor_shown_worse():
    groups = {"A": [0.90, 0.91, 0.92], "B": [0.50, 0.51, 0.52], "D": [0.10]}
    assert rank_with_ties(groups) == ["A", "D"]  # was ["A"]: only the runner-up was checked
    assert rank_with_ties({"A": [0.95], "B": [0.50, 0.51, 0.52]}) == ["A", "B"]


def test_holm_can_take_the_star_away():
    # B and C each behind A at 0.025 < p < 0.05 (Welch, sd 0.02, gaps 0.052 and 0.048:
    # t = 3.18 and 2.94, df 4): uncorrected both worse; Holm's smallest p is 2 p > 0.05
    groups = {"A": [0.80, 0.82, 0.84], "B": [0.748, 0.768, 0.788], "C": [0.752, 0.772, 0.792]}
    p = sorted(compare(groups["A"], groups[k]).p_value for k in "BC")
    assert 0.025 < p[0] < p[1] < 0.05
    assert rank_with_ties(groups, correction="none") == ["A"]
    assert rank_with_ties(groups) == ["A", "C", "B"]  # best mean first
