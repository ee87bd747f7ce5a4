"""The paper's reward schemes by name (Eqs. 6-8; rewards.assign_rewards computes them from `correct`), kept
apart from grading so a trainer can name them without importing math-verify or polars."""
SCHEMES = ("constant", "gaussian", "gpg_mean", "gpg_scaled")
# The reward variants of the paper's Table 6, by name: assign_rewards' arguments (r_pos stays 1)
PAPER_VARIANTS = {
    "gpg_mean": {"scheme": "gpg_mean"},
    "gpg_scaled": {"scheme": "gpg_scaled"},
    "gaussian": {"scheme": "gaussian"},
    "constant_-0.2": {"scheme": "constant", "r_neg": -0.2},
    "constant_-0.5": {"scheme": "constant", "r_neg": -0.5},
    "constant_-0.8": {"scheme": "constant", "r_neg": -0.8},
}
