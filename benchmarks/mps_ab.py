"""Report (not a test): one study run with and without CUDA MPS on the same warm machine (issue 17, item 3).

    python benchmarks/mps_ab.py reports/benchmarks/gpu_time/mps_ab --study minimal_attention_long

FOLDER holds ``pair1``, ``pair2``, ...: each a ``plain`` and an ``mps`` run of the study, imported by
scripts/gpu_import.py into ``pairN/{plain,mps}/STUDY`` (``MPS=1`` and config/overlays/mps.yaml for the second), and
``pairN/compare.csv``, ``slimbench compare`` of the MPS run against the plain one.

The rule, written in reports/benchmarks/README.md ("Session 16") before any run: the **first** pair decides.
MPS **helps** iff its workflow wall time is at most ``MAX_RATIO`` times the plain run's and every compare check is
ok; it **does not help** if the ratio is above ``MAX_RATIO``; **inconclusive** if it is faster but a check fails, or
if either run did not finish. Later pairs were added after the first had run: they are shown, and do not decide.
Each pair must have run on one machine (the same GPU uuid in both runs' samples), MPS on in its MPS run's log and
off in the plain run's, else the script stops. Writes ``mps_ab.md`` in FOLDER.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from gpu_time import breakdown
from multi_gpu import compare_counts, read_run

MAX_RATIO = 0.85
MPS_LINE = "\nMPS: on ("


def mps_on(folder: Path) -> bool:
    return any(MPS_LINE in path.read_text() for path in folder.glob("snakemake*.log"))


def pair(folder: Path, study: str) -> dict:
    plain, mps = folder / "plain" / study, folder / "mps" / study
    runs = read_run(plain), read_run(mps)
    if not runs[0].uuids or runs[0].uuids != runs[1].uuids:
        raise SystemExit(f"{folder}: the two runs' samples name GPUs {sorted(runs[0].uuids or [])} and "
                         f"{sorted(runs[1].uuids or [])}; a pair runs on one machine. Fix: import both runs of one "
                         f"warm machine.")
    if mps_on(plain) or not mps_on(mps):
        raise SystemExit(f"{folder}: MPS must be on in mps/ (its log's 'MPS: on' line) and off in plain/.")
    ok, total = compare_counts(folder / "compare.csv")
    return {"pair": folder.name, "plain_s": runs[0].seconds, "mps_s": runs[1].seconds,
            "ratio": runs[1].seconds / runs[0].seconds, "ok": ok, "checks": total,
            "finished": runs[0].finished and runs[1].finished, "plain": breakdown(plain, runs[0].seconds),
            "mps": breakdown(mps, runs[1].seconds)}


def verdict(first: dict) -> str:
    if not first["finished"]:
        return "inconclusive (a run did not finish)"
    if first["ratio"] > MAX_RATIO:
        return f"does not help (ratio {first['ratio']:.3f} > {MAX_RATIO})"
    if first["ok"] < first["checks"] or not first["checks"]:
        return f"inconclusive (faster, but {first['ok']} of {first['checks']} compare checks ok)"
    return f"helps (ratio {first['ratio']:.3f} <= {MAX_RATIO}, {first['ok']} of {first['checks']} checks ok)"


def report(rows: list[dict], study: str) -> str:
    lines = [f"# {study} with and without CUDA MPS, pair by pair (benchmarks/mps_ab.py)", "",
             "| pair | plain s | MPS s | MPS / plain | compare checks ok | plain: jobs at once; GPU busy; kernel s; "
             "median stage s; median job s | the same with MPS | decides |", "|---|---|---|---|---|---|---|---|"]
    for i, row in enumerate(rows):
        cells = [row["pair"], str(row["plain_s"]), str(row["mps_s"]), f"{row['ratio']:.3f}",
                 f"{row['ok']} of {row['checks']}",
                 *("; ".join(row[run][2:6] + row[run][8:]) for run in ("plain", "mps")),
                 "yes (pre-registered)" if i == 0 else "no (added after the first pair)"]
        lines.append("| " + " | ".join(cells) + " |")
    ratios = [row["ratio"] for row in rows]
    lines += ["", f"Mean MPS / plain over the {len(rows)} pairs: {statistics.mean(ratios):.3f} "
                  f"(range {min(ratios):.3f} to {max(ratios):.3f}).",
              f"Verdict by the pre-registered rule (first pair; MPS helps at a ratio <= {MAX_RATIO} with every check "
              f"ok): **{verdict(rows[0])}**.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--study", required=True)
    args = parser.parse_args()
    pairs = sorted((p for p in args.folder.glob("pair*") if p.is_dir()), key=lambda p: int(p.name[4:]))
    if not pairs:
        raise SystemExit(f"{args.folder}: no pair1, pair2, ... folders. Fix: import the runs as the docstring says.")
    text = report([pair(p, args.study) for p in pairs], args.study)
    (args.folder / "mps_ab.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
