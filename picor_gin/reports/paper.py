"""The PiCor paper's Table 1 (methods) and Table 2 (ablation), Bai et al., AAAI 2023 (numbers as
in docs/design.md, "The algorithm"): each cell's shipped gin file, the paper's number and the metric it is."""
from __future__ import annotations

import dataclasses
from pathlib import Path

TABLES = ("table1", "table2")
BENCHMARKS = ("mt10", "halfcheetah", "tiny")  # tiny: not in the paper, the minutes-long check

METRIC = {"mt10": "mean_success", "halfcheetah": "mean_return", "tiny": "mean_score"}
PERCENT = {"mt10"}  # the paper gives MT10's success rate in percent


@dataclasses.dataclass(frozen=True)
class Cell:
    """One column of a paper table on one benchmark; `gin_file` None where nothing here runs it."""

    label: str
    gin_file: str | None
    paper: float | None

    @property
    def stem(self) -> str | None:
        return None if self.gin_file is None else Path(self.gin_file).stem


_TABLE1 = (  # column head, gin file suffix (None: not in the one-stage grid; KTM-DRL needs its teachers first)
    ("PiCor", "picor"), ("MTSAC", "mtsac"), ("MTMHSAC", "mtmhsac"), ("Soft Modularization", "soft_modular"),
    ("KTM-DRL", None), ("PCGrad", "mtsac_pcgrad"),
)
_TABLE2 = (("Ada O Cor O", "adaO_corO"), ("Ada X Cor O", "adaX_corO"), ("Ada O Cor X", "adaO_corX"),
           ("Ada X Cor X", "adaX_corX"))
_PAPER = {
    ("table1", "mt10"): (73.3, 23.3, 46.0, 46.6, 66.6, 63.3),  # success, %
    ("table1", "halfcheetah"): (15200, 7080, 8170, 10830, 10750, 10084),  # episode return
    ("table2", "mt10"): (73.3, 60.0, 24.0, 23.3),
    ("table2", "halfcheetah"): (15200, 12400, 7518, 7080),
}


def cells(table: str, benchmark: str) -> list[Cell]:
    """The table's columns on `benchmark`, in the paper's order."""
    if table not in TABLES or benchmark not in BENCHMARKS:
        raise ValueError(f"no {table} on {benchmark}: tables {TABLES}, benchmarks {BENCHMARKS}")
    if table == "table1":
        files = [None if suffix is None else f"gin_configs/{benchmark}_{suffix}.gin" for _, suffix in _TABLE1]
        labels = [label for label, _ in _TABLE1]
    else:
        files = [f"gin_configs/ablation/{benchmark}_{suffix}.gin" for _, suffix in _TABLE2]
        labels = [label for label, _ in _TABLE2]
    paper = _PAPER.get((table, benchmark), (None,) * len(labels))
    return [Cell(label, gin_file, number) for label, gin_file, number in zip(labels, files, paper)]
