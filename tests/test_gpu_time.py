"""benchmarks/gpu_time.py reads job durations from a Snakemake log: checked on a log written by hand in
Snakemake 9's format (two jobs started at once, finished 43 s and 61 s later; a third 1 min after, then a
checkpoint), also over several calls of a resumed run; the kernel seconds from utilisation samples, worked out
by hand; and its verdict against the 30 minutes, with runs that did not finish counted as lower bounds."""

import pytest
from conftest import load_file_module

gpu_time = load_file_module("benchmarks/gpu_time.py")

LOG = """Execute 2 jobs...

[Sun Dec  6 19:48:47 2026]
localrule base:
    output: a
    jobid: 4
    resources: tmpdir=/tmp, gpu=1
[Sun Dec  6 19:48:47 2026]
rule compress:
    output: b
    jobid: 34
[Sun Dec  6 19:49:30 2026]
Finished jobid: 4 (Rule: base)
1 of 3 steps (33%) done
[Sun Dec  6 19:49:48 2026]
Finished jobid: 34 (Rule: compress)
[Sun Dec  6 19:49:48 2026]
localrule evaluate:
    jobid: 5
[Sun Dec  6 19:50:48 2026]
Finished jobid: 5 (Rule: evaluate)
[Sun Dec  6 19:50:48 2026]
localcheckpoint derive:
    jobid: 6
[Sun Dec  6 19:50:53 2026]
Finished jobid: 6 (Rule: derive)
"""


def test_job_spans_from_a_snakemake_log(tmp_path):
    log = tmp_path / "snakemake.log"
    log.write_text(LOG)
    assert sorted(gpu_time.job_spans(log)) == [("base", 0, 43), ("compress", 0, 61), ("derive", 121, 126), ("evaluate", 61, 121)]


def measured(study: str, seconds: str, finished: str) -> dict[str, str]:
    """One row of after.csv."""
    return {"studies": study, "workflow_s": seconds, "jobs_per_gpu": "8", "gpu": "H100", "finished": finished,
            "source": "x"}


def test_an_unfinished_run_is_a_lower_bound(tmp_path):
    config = {"name": "c", "studies": {"a": {}, "b": {}, "c": {}}}
    after = [measured("a", "1000", "yes"), measured("b", "900", "no")]
    text = gpu_time.table(config, tmp_path, after)
    assert "| a | - | no reference | 1,000 | alone |" in text
    assert "| b | - | no reference | 900 or more (unfinished) | alone |" in text
    assert "not measured: c." in text
    assert "**not met**: the measured studies alone take at least 31.7 GPU-minutes" in text  # 1,900 s / 60


def test_a_resumed_run_is_read_from_one_log_and_one_sample_file_per_call(tmp_path):
    study = tmp_path / "s"
    study.mkdir()
    for log in ("snakemake.log", "snakemake.2.log"):  # each call's jobs: 43 + 61 + 60 + 5 = 169 job-seconds
        (study / log).write_text(LOG)
    header = "timestamp, index, utilization.gpu [%], memory.used [MiB]\n"
    (study / "gpu.csv").write_text(header + "t, 0, 0 %, 1\nt, 0, 50 %, 1\n")
    (study / "gpu.2.csv").write_text(header + "t, 0, 100 %, 1\nt, 0, 0 %, 1\n")
    (study / "gpu_speedup.csv").write_text("dataset,model,chain\nd,m,base+stat-0.3\n")  # a table of the run, not samples
    (study / "runs.csv").write_text("stage_time_s,wall_time_s,probe_time_s\n1,4,2\n3,9,2\n")
    row = gpu_time.breakdown(study, 200.0)
    # 338 / 200 jobs at once; 2 of 4 samples busy, mean 37.5 %, so 0.375 x 200 s = 75 kernel seconds
    assert row[:8] == ["s", "2", "1.7", "50% (mean 38%)", "75", "2.0", "4.5", "2.0"]


def test_kernel_seconds_add_up_over_the_studies_as_a_floor_for_running_them_together(tmp_path):
    header = "timestamp, index, utilization.gpu [%], memory.used [MiB]\n"
    for study, samples in (("a", "20 %"), ("b", "60 %")):
        (tmp_path / study).mkdir()
        (tmp_path / study / "snakemake.log").write_text(LOG)
        (tmp_path / study / "gpu.csv").write_text(header + f"t, 0, {samples}, 1\n")
        (tmp_path / study / "runs.csv").write_text("stage_time_s,wall_time_s,probe_time_s\n1,4,2\n")
    text = gpu_time.breakdowns(tmp_path, [measured("a", "300", "yes"), measured("b", "150", "yes")])
    assert "about 150 s (2.5 min)" in text  # 0.2 x 300 s + 0.6 x 150 s


def test_every_study_measured_under_the_target_is_inconclusive_while_a_run_is_unfinished(tmp_path):
    config = {"name": "c", "studies": {"a": {}, "b": {}}}
    after = [measured("a", "100", "yes"), measured("b", "100", "no")]
    assert "**inconclusive**: a run unfinished" in gpu_time.table(config, tmp_path, after)
    after[1]["finished"] = "yes"
    assert "Target: the whole config in at most 30 GPU-minutes: **met**." in gpu_time.table(config, tmp_path, after)


def test_the_calls_behind_a_reference_are_shown_for_a_study_not_measured_but_never_added_to_the_total(tmp_path):
    config = {"name": "c", "studies": {"a": {}, "b": {}, "c": {}, "d": {}}}
    after = [measured("a", "600", "yes")]
    earlier = [{**measured("b c", "1000", "no"), "route": "old route"}, {**measured("a d", "50", "yes"), "route": "x"}]
    text = gpu_time.table(config, tmp_path, after, earlier)
    assert "| a | - | no reference | 600 | alone |" in text  # measured: its earlier calls are not shown
    assert "| b | - | no reference | not measured (its reference's calls, old route: 1,000 or more (unfinished)) | c |" in text
    assert "| d | - | no reference | not measured |  |  |  |" in text  # its row also covers a: left out
    assert "After: 600 s (10.0 min)" in text and "not measured: b, c, d." in text and "**inconclusive**" in text
    # b and c share one row of calls: counted once, 1,000 s; the row of a and d not at all
    assert "references of 2 of the studies not measured took at least 1,000 s (16.7 min)" in text
    earlier[0]["finished"] = "yes"
    assert "references of 2 of the studies not measured took 1,000 s" in gpu_time.table(config, tmp_path, after, earlier)


def test_earlier_calls_of_an_unknown_study_or_twice_for_one_study_are_refused(tmp_path):
    config = {"name": "c", "studies": {"a": {}, "b": {}}}
    with pytest.raises(ValueError, match=r"names \['z'\], not studies of c.yaml"):
        gpu_time.table(config, tmp_path, [], [{**measured("a z", "1", "yes"), "route": "x"}])
    for order in (("a b", "b"), ("b", "a b")):  # also when the first row is left out, a being measured
        with pytest.raises(ValueError, match=r"gives \['b'\] more than one row"):
            gpu_time.table(config, tmp_path, [measured("a", "1", "yes")],
                           [{**measured(s, "1", "yes"), "route": "x"} for s in order])


def test_samples_with_the_uuid_column_read_like_older_ones_without_it(tmp_path):
    old = tmp_path / "old"
    new = tmp_path / "new"
    for folder in (old, new):
        folder.mkdir()
    (old / "gpu.csv").write_text("timestamp, index, utilization.gpu [%], memory.used [MiB]\n"
                                 "2026/12/07 05:36:52.277, 0, 0 %, 0 MiB\n2026/12/07 05:36:57.281, 0, 35 %, 900 MiB\n")
    (new / "gpu.csv").write_text("timestamp, index, utilization.gpu [%], memory.used [MiB], uuid\n"
                                 "2026/12/07 05:36:52.277, 0, 0 %, 0 MiB, GPU-aa\n"
                                 "2026/12/07 05:36:52.277, 1, 35 %, 900 MiB, GPU-bb\n")
    assert gpu_time.utilisation(old) == gpu_time.utilisation(new) == [0.0, 35.0]
    assert gpu_time.samples(new / "gpu.csv")[1] == {"timestamp": "2026/12/07 05:36:52.277", "index": "1",
                                                    "utilization.gpu": "35 %", "memory.used": "900 MiB",
                                                    "uuid": "GPU-bb"}
    assert "uuid" not in gpu_time.samples(old / "gpu.csv")[0]


def test_the_parts_of_the_evaluations_are_medians_over_the_jobs_that_recorded_them(tmp_path):
    """Three evaluations with parts (medians by hand: age 7, task_metric 2, latency 9) and one job without them;
    a study whose jobs.csv has no parts adds no row, and no study with parts, no table."""
    header = "kind,time_s,process_age_s,eval_phases_s\n"
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "jobs.csv").write_text(header + "base,60,,\n"
                                             + 'evaluate,10,6,"{""task_metric"": 1, ""latency"": 9}"\n'
                                             + 'evaluate,12,7,"{""task_metric"": 2, ""latency"": 8}"\n'
                                             + 'evaluate,15,9,"{""task_metric"": 4, ""latency"": 10}"\n')
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "jobs.csv").write_text(header + "evaluate,10,,\n")
    text = gpu_time.evaluation_parts(tmp_path, [{"studies": "a"}, {"studies": "b"}, {"studies": "c"}])
    assert text.splitlines()[-1] == "| a | 3 | process age 7.0, task_metric 2.0, latency 9.0 |"
    assert "| b |" not in text
    assert gpu_time.evaluation_parts(tmp_path, [{"studies": "b"}]) == ""
