"""benchmarks/idle_verdict.py applies item 5's rule for the idle runs (reports/benchmarks/README.md) as written: the
chains it judges against the README's list of stages (and session 12's addendum: edge_vit's heads and rows
targets), each row's status and each verdict against outcomes worked out by hand, and rows timed otherwise than the
rule says counted as not timed."""

import csv

import pytest
from conftest import REPO, load_file_module

from slimbench.config import load_config
from slimbench.stages import STAGES

idle_verdict = load_file_module("benchmarks/idle_verdict.py")
CONFIG = load_config(str(REPO / "config" / "default.yaml"))
# The rule's list, as the README wrote it before any run (commit 6188ac3).
README_STAGES = {"dgmr", "dgmr_mlp", "stat", "stat_nocorrect", "kwon", "kwon_search", "heads_magnitude",
                 "heads_random", "mlp_magnitude", "mlp_random", "mlp_activation", "mlp_taylor"}
COLUMNS = ["dataset", "model", "seed", "chain", "batch", "flops_ratio", "speedup_idle", "speedup_idle_ci_low",
           "speedup_idle_ci_high", "idle_over_flops", "pairs_idle"]


def test_the_stages_judged_are_the_readmes():
    assert {name for name in STAGES if idle_verdict.method(f"base+{name}")} == README_STAGES


@pytest.mark.parametrize("chain, expected", [
    ("base+dgmr-0.7+dgmr_kd", "dgmr"),
    ("base+kd+mlp_magnitude-0.5", "mlp_magnitude"),
    ("base+stat-0.4+finetune", "stat"),
    ("base+dgmr-0.7+int8", None),
    ("base+fp16+heads_magnitude-0.3", None),
    ("base+feature_kd-mobilevit_xs+structured_prune-heads", "structured_prune-heads"),
    ("base+structured_prune-rows+iterative_prune-heads", "structured_prune-rows+iterative_prune-heads"),
    ("base+structured_prune-filters", None),
    ("base+structured_prune", None),  # its default target: filters
    ("base+kd", None),
])
def test_method_of_a_chain(chain, expected):
    assert idle_verdict.method(chain) == expected


def test_a_target_set_in_the_settings_counts():
    assert idle_verdict.method("base+structured_prune", {"structured_prune": {"target": "rows"}}) == \
        "structured_prune-rows"


def row(ratio: float, speedup: float, high: float) -> dict[str, str]:
    return {"flops_ratio": str(ratio), "speedup_idle_ci_high": str(high), "idle_over_flops": str(speedup / ratio)}


@pytest.mark.parametrize("ratio, speedup, high, expected", [
    (2.0, 1.6, 1.7, "pass"),        # 1.6 / 2 = 0.8, at the target
    (2.0, 1.58, 1.61, "undecided"),  # 0.79, but the top of its interval 1.61 / 2 = 0.805 reaches it
    (2.0, 1.58, 1.599, "fail"),      # 0.79, and 1.599 / 2 = 0.7995 is below
    (2.0, 1.58, 1.6, "undecided"),   # 0.79, the top exactly at 1.6 / 2 = 0.8
    (1.5, 1.5, 1.6, "pass"),
    (2.5, 1.46, 1.5, "fail"),        # session 11's stat_nocorrect-0.6, rounded: 0.584, top 0.6
])
def test_status_of_a_row(ratio, speedup, high, expected):
    assert idle_verdict.status(row(ratio, speedup, high)) == expected


@pytest.mark.parametrize("statuses, untimed, expected", [
    (["pass", "pass"], 0, "met"),
    (["pass", "pass"], 1, "inconclusive"),
    (["pass", "undecided"], 0, "inconclusive"),
    (["pass", "undecided", "fail"], 3, "not met"),
    ([], 4, "inconclusive"),
])
def test_verdict_of_a_method(statuses, untimed, expected):
    assert idle_verdict.verdict(statuses, untimed) == expected


@pytest.mark.parametrize("verdicts, expected", [
    (["met", "met"], "met"), (["met", "inconclusive"], "inconclusive"), (["inconclusive", "not met"], "not met"),
    ([], "inconclusive"),
])
def test_item_5(verdicts, expected):
    assert idle_verdict.overall(verdicts) == expected


@pytest.mark.parametrize("speedup, ratio, expected", [
    (2.0, 2.0, 0.0),  # shrank as the FLOPs did
    (1.0, 2.0, 1.0),  # nothing shrank
    (1.25, 2.0, 0.6),  # 1/1.25 = 0.8 = 0.6 + 0.4 / 2
    (1.5, 3.0, 0.5),  # 1/1.5 = 0.667 = 0.5 + 0.5 / 3
    (1.0, 1.0, None),  # no FLOPs reduction to solve against
])
def test_time_not_shrunk(speedup, ratio, expected):
    assert idle_verdict.unshrunk_share(speedup, ratio) == (None if expected is None else pytest.approx(expected))


def write_table(path, rows):
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def timed(chain: str, seed: int, over_flops: float, pairs: int = 50, batch: int = 256) -> dict:
    """A row of stat's idle table: FLOPs ratio 2, the interval's top 0.04 above the speed-up (0.02 of the ratio)."""
    speedup = 2 * over_flops
    return {"dataset": "sst2", "model": "minilm", "seed": seed, "chain": chain, "batch": batch, "flops_ratio": 2.0,
            "speedup_idle": speedup, "speedup_idle_ci_low": speedup - 0.02, "speedup_idle_ci_high": speedup + 0.04,
            "idle_over_flops": over_flops, "pairs_idle": pairs}


def test_a_study_judged_from_its_tables(tmp_path):
    # default.yaml's stat: MiniLM on SST-2, seeds 0 and 1, evaluation batch 256; chains stat-0.3..0.6,
    # stat_nocorrect-0.4/0.6, heads_magnitude-0.3..0.6, kwon-0.3..0.6, kwon_search-0.4/0.6.
    stat = [timed(f"base+stat-{v}", seed, 0.85) for seed in (0, 1) for v in ("0.3", "0.4", "0.5", "0.6")]
    nocorrect = [timed("base+stat_nocorrect-0.4", seed, 0.9) for seed in (0, 1)]
    nocorrect += [timed("base+stat_nocorrect-0.6", 0, 0.79), timed("base+stat_nocorrect-0.6", 1, 0.5)]
    kwon = [timed(f"base+kwon-{v}", seed, 0.81) for seed in (0, 1) for v in ("0.3", "0.4", "0.5", "0.6")]
    kwon[-1] = timed("base+kwon-0.6", 1, 0.81, pairs=10)  # not timed as the rule says
    kwon[-2] = {**timed("base+kwon-0.5", 1, 0.81), "flops_ratio": "", "idle_over_flops": ""}  # no FLOPs
    search = [timed(f"base+kwon_search-{v}", seed, 0.95) for seed in (0, 1) for v in ("0.4", "0.6")]
    search[0] = timed("base+kwon_search-0.4", 0, 0.95, batch=64)  # at another batch
    write_table(tmp_path / "first.csv", [timed("base", 0, 1.0), *stat, *nocorrect[:2]])
    write_table(tmp_path / "second.csv", [*nocorrect[2:], *kwon, *search, timed("base+stat-0.3", 1, 0.7)])
    runs = tmp_path / "idle_runs.csv"
    runs.write_text("study,table,gpu,date,source\nstat,first.csv,H100,d,c\nstat,second.csv,H100,d,c\n")
    judged, not_timed = idle_verdict.judge(CONFIG, runs)
    assert not_timed == ["skeleton", "dgmr", "stat_llama", "edge_vit_cifar", "crossbench"]
    text = idle_verdict.report(CONFIG, judged, not_timed)
    # stat: 8 pass in the first run; the second run's stat-0.3 seed 1 reads 0.7, top 0.72: clearly fails.
    assert "| stat | stat | 8 | 9 | 8 | 0 | 1 | 0.700 (base+stat-0.3, 1) | **not met** |" in text
    # stat_nocorrect: 0.9, 0.9, 0.79 (top 0.81: undecided), 0.5 (top 0.52: fails).
    assert "| stat | stat_nocorrect | 4 | 4 | 2 | 1 | 1 | 0.500 (base+stat_nocorrect-0.6, 1) | **not met** |" in text
    assert "| stat | heads_magnitude | 8 | 0 | 0 | 0 | 0 | - | **inconclusive** |" in text
    assert "| stat | kwon | 8 | 6 | 6 | 0 | 0 | 0.810 (base+kwon-0.3, 0) | **inconclusive** |" in text
    assert "| stat | kwon_search | 4 | 3 | 3 | 0 | 0 | 0.950 (base+kwon_search-0.6, 0) | **inconclusive** |" in text
    assert "**Item 5: not met.** Studies timed: stat." in text
    assert "| base+kwon-0.6 |  |  |  |  |  | not timed | second.csv: 10 pairs at batch 256, not >= 50 at 256 |" in text
    assert "not timed | second.csv: 50 pairs at batch 64, not >= 50 at 256 |" in text
    assert "| base+kwon-0.5 |  |  |  |  |  | not timed | second.csv: no FLOPs ratio or speed-up |" in text
    assert "| base |" not in text  # the A/A row is not judged
    # stat-0.3 seed 1: speed-up 1.4 at FLOPs ratio 2: 1/1.4 = 0.5 + 0.5 * f gives f = 0.429 of the time not shrunk.
    assert "| base+stat-0.3 | 2.000 | 1.400 [1.380, 1.440] | 0.700 | 0.720 | 0.429 | fail | second.csv |" in text


def test_all_passing_is_met(tmp_path):
    chains = ["stat-0.3", "stat-0.4", "stat-0.5", "stat-0.6", "stat_nocorrect-0.4", "stat_nocorrect-0.6",
              *(f"{m}-{v}" for m in ("heads_magnitude", "kwon") for v in ("0.3", "0.4", "0.5", "0.6")),
              "kwon_search-0.4", "kwon_search-0.6"]
    write_table(tmp_path / "t.csv", [timed(f"base+{c}", seed, 0.8) for seed in (0, 1) for c in chains])
    runs = tmp_path / "idle_runs.csv"
    runs.write_text("study,table,gpu,date,source\nstat,t.csv,H100,d,c\n")
    text = idle_verdict.report(CONFIG, *idle_verdict.judge(CONFIG, runs))
    assert text.count("**met**") == 5 and "**Item 5: met.**" in text


@pytest.mark.parametrize("listed, message", [
    ("stat,t.csv", "not an experiment of study 'stat'"),
    ("stats,t.csv", "'stats' is not a study of default.yaml"),
    ("stat,stat/t.csv", "table 'stat/t.csv' not found"),
    ("stat,t.csv\nstat,t.csv", "listed more than once"),
])
def test_bad_lists_are_refused(tmp_path, listed, message):
    write_table(tmp_path / "t.csv", [timed("base+dgmr-0.7", 0, 0.9)])  # a dgmr chain: not of stat
    runs = tmp_path / "idle_runs.csv"
    runs.write_text("study,table,gpu,date,source\n" + "".join(f"{line},H100,d,c\n" for line in listed.split("\n")))
    with pytest.raises(ValueError, match=message):
        idle_verdict.judge(CONFIG, runs)


def test_no_run_yet(tmp_path):
    runs = tmp_path / "idle_runs.csv"
    runs.write_text("study,table,gpu,date,source\n")
    text = idle_verdict.report(CONFIG, *idle_verdict.judge(CONFIG, runs))
    assert "**Item 5: inconclusive.** Studies timed: none." in text
    assert "not timed: skeleton, dgmr, stat, stat_llama, edge_vit_cifar, crossbench." in text
