"""benchmarks/gpu_time.py reads job durations from a Snakemake log: checked on a log written by hand in
Snakemake 9's format (two jobs started at once, finished 43 s and 61 s later; a third 1 min after, then a
checkpoint)."""

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
