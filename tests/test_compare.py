"""slimbench compare: a result that moved beyond the tolerance fails, one within it passes (hand-made runs)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pandas as pd

from conftest import REPO
from slimbench import cli, provenance
from slimbench import compare as compare_module
from slimbench.compare import compare_runs, reference_for, tolerance_for


def write_runs(folder: Path, accuracies: dict[int, float], params: int = 1000) -> None:
    (folder / "study").mkdir(parents=True, exist_ok=True)
    rows = [{"dataset": "d", "model": "m", "chain": "base", "seed": seed, "metric": "accuracy", "accuracy": acc,
             "params": params, "flops": 10.0} for seed, acc in accuracies.items()]
    pd.DataFrame(rows).to_csv(folder / "study" / "runs.csv", index=False)


def test_tolerance_is_two_reference_sigmas_or_the_floor(tmp_path: Path) -> None:
    write_runs(tmp_path / "ref", {0: 0.80, 1: 0.82})  # mean 0.81, std 0.01414 (by hand)
    write_runs(tmp_path / "run", {0: 0.835, 1: 0.835})  # +0.025 <= 2 * 0.01414 = 0.02828
    table = compare_runs(tmp_path / "run", tmp_path / "ref", {"sigmas": 2, "floor": {}})
    row = table[table["column"] == "accuracy"].iloc[0]
    assert row["verdict"] == "ok" and abs(row["tolerance"] - 0.028284) < 1e-5
    write_runs(tmp_path / "run", {0: 0.845, 1: 0.845})  # +0.035 > 0.02828
    assert compare_runs(tmp_path / "run", tmp_path / "ref", {"sigmas": 2})["verdict"].tolist() == ["changed", "ok", "ok"]
    assert compare_runs(tmp_path / "run", tmp_path / "ref", {"sigmas": 2, "floor": {"accuracy": 0.04}})[
        "verdict"].tolist() == ["ok", "ok", "ok"]


def test_a_deliberately_changed_result_fails_the_command(tmp_path: Path) -> None:
    write_runs(tmp_path / "ref", {0: 0.8125})
    write_runs(tmp_path / "run", {0: 0.8125})
    same = subprocess.run(["slimbench", "compare", str(tmp_path / "run"), str(tmp_path / "ref")], capture_output=True,
                          text=True)
    assert same.returncode == 0, same.stderr
    write_runs(tmp_path / "run", {0: 0.8126}, params=999)  # one seed on CPU: tolerance 0, params exact
    moved = subprocess.run(["slimbench", "compare", str(tmp_path / "run"), str(tmp_path / "ref")], capture_output=True,
                           text=True)
    assert moved.returncode == 2 and "2 of 3 checks outside the tolerance" in moved.stderr
    assert "changed" in (tmp_path / "run" / "compare.md").read_text()


def test_a_run_with_fewer_seeds_is_missing_not_ok(tmp_path: Path) -> None:
    write_runs(tmp_path / "ref", {0: 0.8, 1: 0.8})
    write_runs(tmp_path / "run", {0: 0.8})
    assert set(compare_runs(tmp_path / "run", tmp_path / "ref")["verdict"]) == {"missing"}


def test_each_cpu_kernel_family_is_compared_with_its_own_reference() -> None:
    """CPU runs are exact only within a family (Intel Xeon and AMD EPYC AVX2 smoke runs differ by up to 6.6 pt)."""
    settings = {"references": {"AuthenticAMD-AVX2": "reports/smoke-AuthenticAMD-AVX2"}}
    assert reference_for(settings, "reports/smoke", "AuthenticAMD-AVX2") == "reports/smoke-AuthenticAMD-AVX2"
    assert reference_for(settings, "reports/smoke", "GenuineIntel-AVX512") == "reports/smoke"
    assert reference_for({**settings, "reference": None}, "reports/smoke", "GenuineIntel-AVX512") is None


def test_a_family_without_its_own_reference_gets_the_other_family_tolerance(tmp_path: Path) -> None:
    """Exact for a listed family; another family is held to other_family's floor, and params stay exact."""
    settings = {"sigmas": 0, "floor": {}, "references": {"AuthenticAMD-AVX2": "reports/smoke-AuthenticAMD-AVX2"},
                "other_family": {"floor": {"accuracy": 0.17}}}
    assert tolerance_for(settings, "AuthenticAMD-AVX2") == (settings, False)
    other, used = tolerance_for(settings, "GenuineIntel-AMX")
    assert used and other["floor"] == {"accuracy": 0.17} and other["sigmas"] == 0
    # a family with its own reference, compared by hand with another folder: that folder holds another family's runs
    assert tolerance_for(settings, "AuthenticAMD-AVX2", "reports/smoke-AuthenticAMD-AVX2") == (settings, False)
    assert tolerance_for(settings, "AuthenticAMD-AVX2", "reports/smoke") == (other, True)
    unset = {**settings, "other_family": None}
    assert tolerance_for(unset, "GenuineIntel-AMX") == (unset, False)
    write_runs(tmp_path / "ref", {0: 0.84})
    write_runs(tmp_path / "run", {0: 0.70})  # -0.14: outside 0 (same family), inside 0.17 (another)
    assert compare_runs(tmp_path / "run", tmp_path / "ref", settings)["verdict"].tolist() == ["changed", "ok", "ok"]
    assert compare_runs(tmp_path / "run", tmp_path / "ref", other)["verdict"].tolist() == ["ok", "ok", "ok"]
    write_runs(tmp_path / "run", {0: 0.66}, params=999)  # -0.18 and one parameter fewer: both caught
    assert compare_runs(tmp_path / "run", tmp_path / "ref", other)["verdict"].tolist() == ["changed", "changed", "ok"]


def test_the_compare_command_takes_the_tolerance_of_the_machines_family(tmp_path: Path, monkeypatch) -> None:
    """`slimbench compare --config config/smoke.yaml`: exact against the family's own reference that smoke.yaml
    lists, its other_family floor (0.17) against any other folder or on any other family, and compare.md's title
    says which."""
    monkeypatch.setattr(compare_module, "REPO", tmp_path)  # smoke.yaml names references below the checkout
    monkeypatch.chdir(tmp_path)
    own = Path("reports/smoke-AuthenticAMD-AVX2")
    for reference in (own, tmp_path / "ref"):
        write_runs(reference, {0: 0.84})
    write_runs(tmp_path / "run", {0: 0.70})

    def compare(reference: Path) -> int:
        return cli.main(["compare", "--config", str(REPO / "config" / "smoke.yaml"), str(tmp_path / "run"),
                         str(reference)])

    monkeypatch.setattr(provenance, "cpu_kernels", lambda: "AuthenticAMD-AVX2")
    assert compare(own) != 0
    assert pd.read_csv(tmp_path / "run" / "compare.csv")["tolerance"].tolist() == [0, 0, 0]
    monkeypatch.chdir(tmp_path / "run")  # from elsewhere, the family's own folder by its absolute path: still exact
    assert compare(tmp_path / own) != 0
    assert pd.read_csv(tmp_path / "run" / "compare.csv")["tolerance"].tolist() == [0, 0, 0]
    assert compare(tmp_path / "ref") == 0  # the family has its own reference, but this folder is another's
    assert pd.read_csv(tmp_path / "run" / "compare.csv")["tolerance"].tolist() == [0.17, 0, 0]
    monkeypatch.setattr(provenance, "cpu_kernels", lambda: "GenuineIntel-AMX")
    assert compare(tmp_path / "ref") == 0
    assert pd.read_csv(tmp_path / "run" / "compare.csv")["tolerance"].tolist() == [0.17, 0, 0]
    title = (tmp_path / "run" / "compare.md").read_text().splitlines()[0]
    assert "not a reference of this CPU family, GenuineIntel-AMX" in title