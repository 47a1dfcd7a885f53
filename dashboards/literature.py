"""Values *reported* in Chougrad et al. (2017), typed in by hand and marked as such.

Nothing here is reproduced: these are the paper's Table 1 (Inception-v3 on BCDR-F03, 5 runs of
80/20 splits) and the literature rows of its Table 2 (other proposals on the same dataset), shown
below a rule in the reports so that a reader can set the study's numbers against them.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The paper's row order for its variants (Table 1, Figure 2).
PAPER_ORDER: tuple[str, ...] = ("RI", "FE", "1FT", "2FT", "3FT", "AllFT", "FTED")
REPORTED = "reported, not reproduced"
SOURCE = "Chougrad et al. 2017"


@dataclass(frozen=True)
class PaperRow:
    """One variant in the paper's Table 1: accuracy % (mean of 5 runs), std %, minutes."""

    variant: str
    accuracy_pct: float
    std_pct: float
    time_min: float


@dataclass(frozen=True)
class LiteratureRow:
    """One row of the paper's Table 2; None where the paper prints '-'."""

    model: str
    accuracy_pct: float | None
    auc: float | None


#: Chougrad et al. 2017, Table 1.
PAPER_TABLE1: tuple[PaperRow, ...] = (
    PaperRow("RI", 75.83, 1.53, 176.2),
    PaperRow("FE", 92.67, 1.79, 59.1),
    PaperRow("1FT", 94.17, 0.92, 61.6),
    PaperRow("2FT", 96.67, 0.85, 63.9),
    PaperRow("3FT", 95.17, 1.18, 67.1),
    PaperRow("AllFT", 92.67, 1.34, 158.9),
    PaperRow("FTED", 97.50, 1.26, 161.5),
)

#: Chougrad et al. 2017, Table 2 (in its order; "Ours" is their Inceptionv3-FTED).
PAPER_TABLE2: tuple[LiteratureRow, ...] = (
    LiteratureRow("Pérez et al., 2014", None, 0.8562),
    LiteratureRow("Arevalo et al., 2016", None, 0.826),
    LiteratureRow("Padilla et al., 2016", None, 0.950),
    LiteratureRow("Jadoon et al., 2017", 83.74, None),
    LiteratureRow("Perre et al., 2017", None, 0.793),
    LiteratureRow("Chougrad et al., 2017 (Inceptionv3-FTED)", 97.50, 0.96),
)


def paper_table1() -> dict[str, PaperRow]:
    """``{variant: PaperRow}`` of the paper's Table 1."""
    return {r.variant: r for r in PAPER_TABLE1}
