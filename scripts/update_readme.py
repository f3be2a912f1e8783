"""Regenerate README.md's result blocks from the committed reports, so no result number is typed by hand.

    python scripts/update_readme.py        # rewrites the blocks between <!-- BEGIN name --> and <!-- END name -->

Blocks: ``scorecard`` (the papers' claims and their verdicts, from reports/default/SCORECARD.csv, which
``slimbench scorecard --config config/default.yaml --reports reports/default`` writes) and ``smoke`` (the smoke
run's summary table, from reports/smoke/skeleton/table.csv).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
SMOKE_COLUMNS = ["dataset", "model", "chain", "accuracy", "params", "flops", "relative_params_kept",
                 "relative_flops_kept", "relative_stored_bits_kept"]


def scorecard_block() -> str:
    card = pd.read_csv(REPO / "reports" / "default" / "SCORECARD.csv")
    counts = card["verdict"].value_counts()
    summary = ", ".join(f"**{counts.get(v, 0)} {v}**" for v in ("met", "not met", "inconclusive", "not run"))
    by_study = card.groupby("study", sort=False)["verdict"].value_counts().unstack(fill_value=0)
    by_study = by_study.reindex(columns=[v for v in ("met", "not met", "inconclusive", "not run")], fill_value=0)
    table = card.assign(panel=card["dataset"] + " / " + card["model"])[["study", "claim", "panel", "ours", "verdict"]]
    return (f"{len(card)} claim checks over the reference runs: {summary} "
            f"([reports/default/SCORECARD.md](reports/default/SCORECARD.md) has each claim's statement, source, the "
            f"paper's value and the test).\n\n" + by_study.reset_index().to_markdown(index=False) + "\n\n"
            + table.to_markdown(index=False) + "\n")


def smoke_block() -> str:
    table = pd.read_csv(REPO / "reports" / "smoke" / "skeleton" / "table.csv")
    return table[[c for c in SMOKE_COLUMNS if c in table]].to_markdown(index=False, floatfmt=".4g") + "\n"


def replace_block(text: str, name: str, body: str) -> str:
    pattern = re.compile(rf"(<!-- BEGIN {name} -->\n).*?(<!-- END {name} -->)", re.DOTALL)
    if not pattern.search(text):
        sys.exit(f"README.md has no block '{name}' (<!-- BEGIN {name} --> ... <!-- END {name} -->)")
    return pattern.sub(lambda m: m.group(1) + body + m.group(2), text)


def main() -> None:
    path = REPO / "README.md"
    text = path.read_text()
    for name, block in (("scorecard", scorecard_block), ("smoke", smoke_block)):
        text = replace_block(text, name, block())
    path.write_text(text)
    print(f"updated {path}")


if __name__ == "__main__":
    main()
