"""scripts/gpu_import.py, checked on two calls written by hand: the checkout's path becomes <repo>, each call's
log and samples get their own number, the seconds add up and the last call says whether the run finished, and
runs.csv comes from the last call's archive (slimbench itself stands in here: its runs command has its own tests)."""

import io
import tarfile

from conftest import load_file_module

gpu_import = load_file_module("scripts/gpu_import.py")

LOG = """Complete log(s): /srv/ck/.snakemake/log/2026-12-07T121825.snakemake.log
CalledProcessError in file "/srv/ck/workflow/rules/compress.smk", line 23:
workflow wall time: {seconds} s on 1 GPU(s), exit {status}
"""


def call(folder, seconds, status, samples, archive_runs):
    folder.mkdir(parents=True)
    (folder / "snakemake.log").write_text(LOG.format(seconds=seconds, status=status))
    (folder / "gpu.csv").write_text(samples)
    with tarfile.open(folder / "results.tgz", "w:gz") as archive:
        data = archive_runs.encode()
        member = tarfile.TarInfo("results/reports/default/s/runs.csv")
        member.size = len(data)
        archive.addfile(member, io.BytesIO(data))
    return folder


def test_two_calls_of_an_unfinished_run(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(gpu_import, "slimbench", lambda config, results, *args: ran.append((results.name, args)))
    calls = [call(tmp_path / "1", 223, 124, "a\n", "first"), call(tmp_path / "2", 265, 124, "b\n", "last")]
    seconds, finished = gpu_import.import_calls(tmp_path / "c.yaml", "s", calls, tmp_path / "out", [])
    assert (seconds, finished) == (488, False)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gpu.2.csv", "gpu.csv", "runs.csv", "snakemake.2.log", "snakemake.log"]
    assert (out / "gpu.2.csv").read_text() == "b\n" and (out / "runs.csv").read_text() == "last"
    log = (out / "snakemake.2.log").read_text()
    assert "/srv/ck" not in log and 'file "<repo>/workflow/rules/compress.smk"' in log
    assert ran == [("results", ("runs", "--study", "s", "--allow-missing"))]


def test_the_last_call_decides_whether_the_run_finished(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_import, "slimbench", lambda *args: None)
    calls = [call(tmp_path / "1", 100, 124, "", "x"), call(tmp_path / "2", 365, 0, "", "y")]
    assert gpu_import.import_calls(tmp_path / "c.yaml", "s", calls, tmp_path / "out", []) == (465, True)
