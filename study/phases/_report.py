"""Table 1 of the paper from the evaluation runs: accuracy mean ± std, time, AUC per variant."""

from __future__ import annotations

import pandas as pd

PAPER_ORDER = ("RI", "FE", "1FT", "2FT", "3FT", "AllFT", "FTED")


def table1(rows: list[dict]) -> pd.DataFrame:
    """One row per variant (paper order first): test accuracy % mean and std over splits
    (sample std, ddof=1), mean time (min), mean AUC, number of splits."""
    if not rows:
        return pd.DataFrame(columns=["variant", "accuracy_%", "std_%", "time_min", "auc",
                                     "splits"])
    df = pd.DataFrame(rows)
    g = df.groupby("variant")
    out = pd.DataFrame({
        "accuracy_%": g["test_acc"].mean() * 100,
        "std_%": g["test_acc"].std(ddof=1).fillna(0.0) * 100,
        "time_min": g["wall_time_s"].mean() / 60,
        "auc": g["test_auc"].mean(),
        "splits": g.size(),
    }).reset_index()
    rank = {v: i for i, v in enumerate(PAPER_ORDER)}
    out["_o"] = out["variant"].map(lambda v: rank.get(v, len(rank)))
    return out.sort_values(["_o", "variant"]).drop(columns="_o").reset_index(drop=True)


def format_table1(df: pd.DataFrame) -> str:
    lines = ["Table 1 (quick summary: every view a case, logged metrics; the report's Table 1 "
             "combines a lesion's views and gives CIs)",
             f"{'variant':<8}{'accuracy %':>11}{'std %':>8}{'time min':>10}{'AUC':>7}{'splits':>8}"]
    for r in df.itertuples(index=False):
        lines.append(f"{r.variant:<8}{r[1]:>11.2f}{r[2]:>8.2f}{r[3]:>10.2f}{r[4]:>7.3f}"
                     f"{r[5]:>8d}")
    return "\n".join(lines)
