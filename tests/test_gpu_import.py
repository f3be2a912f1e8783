"""scripts/gpu_import.py, checked on calls written by hand: the checkout's path becomes <repo> only where a path of
it ends, each call's log and samples get their own number, the seconds add up, the last call alone says whether the
run finished (exit 0), runs.csv and missing.csv come from the last call's archive, slimbench is pointed at the
extracted results, and bad input is refused before anything is written. slimbench's own commands stand in here
as stubs: its runs command has its own tests."""

import io
import json
import tarfile
from pathlib import Path

import pytest
from conftest import REPO, load_file_module

gpu_import = load_file_module("scripts/gpu_import.py")
DEFAULT = [REPO / "config" / "default.yaml"]
ONE_GPU = DEFAULT + [REPO / "config" / "overlays" / "one_gpu.yaml"]  # its name: default_one_gpu

LOG = """Building DAG of jobs...
  Working directory: /srv/ck
Config file(s): [PosixPath('/srv/ck/config/default.yaml')] and data in /srv/ck2/data
Complete log(s): /srv/ck/.snakemake/log/2026-12-07T121825.snakemake.log
workflow wall time: {seconds} s on 1 GPU(s), exit {status}
"""


def call(folder: Path, seconds: int, status: int, samples: str, files: dict[str, str],
         results: dict[str, str] | None = None, config: str = "default") -> Path:
    """A call's folder; ``files`` go into the archive's report folder of study s under config ``config``,
    ``results`` under results/."""
    folder.mkdir(parents=True)
    (folder / "snakemake.log").write_text(LOG.format(seconds=seconds, status=status))
    (folder / "gpu.csv").write_text(samples)
    members = {f"results/reports/{config}/s/{name}": text for name, text in files.items()}
    members.update({f"results/{path}": text for path, text in (results or {}).items()})
    with tarfile.open(folder / "results.tgz", "w:gz") as archive:
        for name, text in members.items():
            member = tarfile.TarInfo(name)
            member.size = len(text.encode())
            archive.addfile(member, io.BytesIO(text.encode()))
    return folder


@pytest.fixture
def ran(monkeypatch) -> list:
    commands = []
    monkeypatch.setattr(gpu_import, "slimbench", lambda config, results, *args: commands.append((results, args)))
    return commands


def test_two_calls_of_an_unfinished_run(tmp_path, ran):
    calls = [call(tmp_path / "1", 223, 124, "a\n", {"runs.csv": "first"}),
             call(tmp_path / "2", 265, 124, "b\n", {"runs.csv": "last", "missing.csv": "m"})]
    out = tmp_path / "out"
    assert gpu_import.import_calls(DEFAULT, "s", calls, out, []) == (488, False)
    assert sorted(p.name for p in out.iterdir()) == ["gpu.2.csv", "gpu.csv", "jobs.csv", "missing.csv", "runs.csv",
                                                       "snakemake.2.log", "snakemake.log"]
    assert (out / "gpu.2.csv").read_text() == "b\n" and (out / "runs.csv").read_text() == "last"
    log = (out / "snakemake.2.log").read_text()
    assert "PosixPath('<repo>/config/default.yaml')" in log and "Working directory: <repo>\n" in log
    assert "/srv/ck2/data" in log  # another folder that merely starts with the checkout's path is kept
    assert [(results.name, args) for results, args in ran] == [("results", ("runs", "--study", "s", "--allow-missing"))]


@pytest.mark.parametrize("statuses, finished", [((124, 0), True), ((0, 124), False), ((0, 1), False)])
def test_the_last_call_alone_decides_whether_the_run_finished(tmp_path, ran, statuses, finished):
    calls = [call(tmp_path / str(n), 100, status, "", {"runs.csv": "x"}) for n, status in enumerate(statuses)]
    assert gpu_import.import_calls(DEFAULT, "s", calls, tmp_path / "out", []) == (200, finished)


def test_slimbench_reads_and_writes_the_extracted_results_only(tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(gpu_import.subprocess, "run",
                        lambda command: seen.append(command) or type("R", (), {"returncode": 0}))
    gpu_import.slimbench([Path("/c.yaml"), Path("/o.yaml")], tmp_path / "results", "runs", "--study", "s")
    command = seen[0]
    assert command[-8:-2] == ["--study", "s", "--config", "/c.yaml", "--config", "/o.yaml"] and command[-2] == "--set"
    assert json.loads(command[-1]) == {"results_dir": str(tmp_path / "results"),
                                       "reports_dir": str(tmp_path / "results" / "reports")}


def test_bad_input_is_refused_before_anything_is_written(tmp_path, ran):
    first = call(tmp_path / "1", 100, 0, "", {"runs.csv": "x"})
    (first / "results.tgz").unlink()
    out = tmp_path / "out"
    with pytest.raises(SystemExit, match=r"1/results.tgz is missing"):
        gpu_import.import_calls(DEFAULT, "s", [first], out, [])
    assert not out.exists() and not ran
    out.mkdir()
    (out / "snakemake.2.log").write_text("an earlier import")
    with pytest.raises(SystemExit, match="is not empty"):
        gpu_import.import_calls(DEFAULT, "s", [call(tmp_path / "2", 1, 0, "", {"runs.csv": "x"})], out, [])
    cut = call(tmp_path / "3", 1, 0, "", {"runs.csv": "x"})
    (cut / "snakemake.log").write_text(LOG.split("workflow wall time")[0])
    with pytest.raises(SystemExit, match=r"3/snakemake.log: no 'workflow wall time' line"):
        gpu_import.import_calls(DEFAULT, "s", [cut], tmp_path / "new", [])
    assert not (tmp_path / "new").exists()


def test_the_idle_speedup_files_come_from_the_last_call(tmp_path, ran):
    first = call(tmp_path / "1", 100, 124, "", {"runs.csv": "x"})
    (first / "idle_speedup.csv").write_text("stale")
    last = call(tmp_path / "2", 50, 0, "", {"runs.csv": "y"})
    (last / "idle_speedup.csv").write_text("idle table")
    (last / "idle_speedup.jsonl").write_text("{}\n")
    (last / "idle_speedup.err").write_text("warnings")
    out = tmp_path / "out"
    gpu_import.import_calls(DEFAULT, "s", [first, last], out, [])
    assert (out / "idle_speedup.csv").read_text() == "idle table" and (out / "idle_speedup.jsonl").read_text() == "{}\n"
    assert not (out / "idle_speedup.err").exists()


def test_the_idle_runs_entry_is_relative_to_idle_runs_csv(tmp_path):
    runs = tmp_path / "reports" / "benchmarks" / "gpu_time" / "idle_runs.csv"
    out = tmp_path / "reports" / "benchmarks" / "gpu_time" / "stat" / "session12"
    assert gpu_import.idle_runs_entry("stat", out, runs) == \
        "idle_runs.csv: study=stat, table=stat/session12/idle_speedup.csv"


def test_jobs_csv_says_where_and_when_each_job_of_the_study_ran(tmp_path, ran):
    seed = "default/s/mnist/vit/seed0"
    on_gpu = {"device": "cuda", "source": "lock-file pool", "pool": "0,1", "gpu_uuid": "aa-11",
              "cuda_visible_devices": "1"}
    results = {  # a base and a compress step and an evaluation of s, files from before issue 21, and another study
        f"{seed}/base/model/stage.json": json.dumps({"stage": "base", "device": on_gpu,
                                                     "started_at": "2026-12-08T10:00:00.000+00:00",
                                                     "finished_at": "2026-12-08T10:01:00.500+00:00"}),
        f"{seed}/base/metrics.json": json.dumps({"chain": "base", "device": {**on_gpu, "gpu_uuid": "bb-22"},
                                                 "started_at": "2026-12-08T10:01:01.000+00:00",
                                                 "finished_at": "2026-12-08T10:01:30.000+00:00",
                                                 "eval_time_s": 21.5, "process_age_at_evaluation_s": 7.25,
                                                 "eval_phases_s": {"task_metric": 1.5, "latency": 9.0}}),
        f"{seed}/base+int8/model/stage.json": json.dumps({"stage": "int8", "time_s": 3.5}),
        "default/s/mnist/vit/seed1/base/metrics.json": json.dumps({"chain": "base", "device": {"device": "cpu",
                                                                                              "source": "config"}}),
        "default/other/mnist/vit/seed0/base/metrics.json": json.dumps({"chain": "base"}),
    }
    out = tmp_path / "out"
    gpu_import.import_calls(DEFAULT, "s", [call(tmp_path / "1", 9, 0, "", {"runs.csv": "x"}, results)],
                            out, [])
    assert (out / "jobs.csv").read_text().splitlines() == [  # path order: seed0's base (metrics, model), base+int8
        "kind,dataset,model,chain,seed,gpu_uuid,cuda_visible_devices,source,started_at,finished_at,time_s,"
        "process_age_s,eval_phases_s",
        "evaluate,mnist,vit,base,0,bb-22,1,lock-file pool,2026-12-08T10:01:01.000+00:00,2026-12-08T10:01:30.000+00:00,"
        '21.5,7.25,"{""latency"": 9.0, ""task_metric"": 1.5}"',
        "base,mnist,vit,base,0,aa-11,1,lock-file pool,2026-12-08T10:00:00.000+00:00,2026-12-08T10:01:00.500+00:00,,,",
        "compress,mnist,vit,base+int8,0,,,,,,3.5,,",
        "evaluate,mnist,vit,base,1,,,config,,,,,",
    ]


def test_the_one_gpu_reference_is_read_under_its_overlays_name(tmp_path, monkeypatch):
    """The reference ran under config/overlays/one_gpu.yaml: its archive holds default_one_gpu's results only."""
    ran = []
    monkeypatch.setattr(gpu_import, "slimbench", lambda configs, results, *args: ran.append((configs, args)))
    stage = json.dumps({"stage": "base", "device": {"source": "single", "gpu_uuid": "aa", "cuda_visible_devices": "0"},
                        "started_at": "2026-12-08T10:00:00.000+00:00", "finished_at": "2026-12-08T10:00:09.000+00:00"})
    one = call(tmp_path / "1", 300, 0, "", {"runs.csv": "one gpu"},
               {"default_one_gpu/s/mnist/vit/seed0/base/model/stage.json": stage}, config="default_one_gpu")
    with pytest.raises(SystemExit, match="no results of config 'default' for 's' .it holds config.s. default_one_gpu"):
        gpu_import.import_calls(DEFAULT, "s", [one], tmp_path / "refused", [])  # the overlay forgotten
    assert not (tmp_path / "refused").exists() and not ran
    assert gpu_import.import_calls(ONE_GPU, "s", [one], tmp_path / "out", []) == (300, True)
    assert (tmp_path / "out" / "runs.csv").read_text() == "one gpu"
    assert (tmp_path / "out" / "jobs.csv").read_text().splitlines()[1] == \
        "base,mnist,vit,base,0,aa,0,single,2026-12-08T10:00:00.000+00:00,2026-12-08T10:00:09.000+00:00,,,"
    assert ran == [(ONE_GPU, ("runs", "--study", "s", "--allow-missing"))]  # both files, base first
