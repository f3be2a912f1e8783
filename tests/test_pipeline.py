"""Where and when each step ran (issue 21): the stage logs of the base and compress steps and the evaluation's
metrics record the device and the UTC wall-clock span of the step's work. Checked on a tiny CPU study: a CPU job's
device record is the config's device, each span holds the seconds the step timed itself, a step starts after the
step it reads from finished, and runs.csv (what compare reads) gains no column."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import torch

from slimbench import cli, devices
from slimbench.results import flatten
from test_faults import base_config, write_config

UTC_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00$")  # isoformat, milliseconds, UTC
ROUNDING = timedelta(milliseconds=2)  # each timestamp is cut to the millisecond


@pytest.fixture(scope="module")
def ran(tmp_path_factory) -> tuple[Path, datetime, datetime]:
    """The tiny study's results folder, and the wall clock just before and after it ran."""
    tmp = tmp_path_factory.mktemp("pipeline")
    config = base_config(tmp)
    config["studies"]["s"]["chains"] = ["base", "base+int8"]
    config["studies"]["s"]["grid"][0]["base"]["epochs"] = 1
    path = write_config(config, tmp / "config.yaml")
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as patch:
        for name in ("CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID"):
            patch.delenv(name, raising=False)
        patch.setattr(devices, "_claimed", None)
        before = datetime.now(timezone.utc)
        try:
            assert cli.main(["study", "--config", str(path), "--study", "s"]) == 0
        finally:
            torch.set_num_threads(threads)
        after = datetime.now(timezone.utc)
    return Path(config["results_dir"]) / "faults" / "s" / "tiny" / "vit_nano" / "seed0", before, after


def span(record: dict) -> tuple[datetime, datetime]:
    assert UTC_MS.match(record["started_at"]) and UTC_MS.match(record["finished_at"]), record
    return datetime.fromisoformat(record["started_at"]), datetime.fromisoformat(record["finished_at"])


def test_stage_logs_and_metrics_say_where_and_when_each_step_ran(ran):
    seed, before, after = ran
    stages = {chain: json.loads((seed / chain / "model" / "stage.json").read_text()) for chain in ("base", "base+int8")}
    metrics = {chain: json.loads((seed / chain / "metrics.json").read_text()) for chain in ("base", "base+int8")}
    for record in [*stages.values(), *metrics.values()]:
        assert record["device"] == {"device": "cpu", "source": "config"}  # CPU by the config: no GPU claimed
        start, end = span(record)
        assert before - ROUNDING <= start <= end <= after + ROUNDING
    for chain in stages:  # each span holds the seconds the step timed inside it
        start, end = span(stages[chain])
        assert end - start >= timedelta(seconds=stages[chain]["time_s"]) - ROUNDING
        start, end = span(metrics[chain])
        assert end - start >= timedelta(seconds=metrics[chain]["eval_time_s"]) - ROUNDING
        assert span(stages[chain])[1] <= start  # evaluated once its model was saved
    assert span(stages["base"])[1] <= span(stages["base+int8"])[0]  # compressed once its base was saved


def test_runs_csv_gains_no_column(ran):
    seed, _, _ = ran
    row = flatten(json.loads((seed / "base" / "metrics.json").read_text()))
    assert not {"device", "started_at", "finished_at"} & set(row)


def test_an_evaluation_says_where_its_time_went(ran):
    """``eval_phases_s`` splits the evaluation's wall time into its parts (they cover most of it, never more), with
    no GPU part on a CPU run; ``process_age_at_evaluation_s`` is the process's age when the evaluation began."""
    seed, before, after = ran
    for chain in ("base", "base+int8"):
        record = json.loads((seed / chain / "metrics.json").read_text())
        phases = record["eval_phases_s"]
        counted = {"flops"} if "flops" in record["cost"] else set()  # a config may leave FLOPs uncounted
        assert {"load_model", "task_metric", "bitops", "process_memory", "latency", *counted} <= set(phases)
        assert "cuda_memory_and_paired_latency" not in phases and min(phases.values()) >= 0
        assert 0.5 * record["eval_time_s"] <= sum(phases.values()) <= record["eval_time_s"] + 0.01
        assert 0 < record["process_age_at_evaluation_s"]  # this test's process ran the study in-process


def test_phases_add_up_each_part_s_seconds():
    import time

    from slimbench.pipeline import Phases

    phase = Phases()
    for _ in range(2):
        with phase("sleep"):
            time.sleep(0.05)
    with pytest.raises(RuntimeError), phase("failing"):
        raise RuntimeError("timed all the same")
    assert 0.1 <= phase.seconds["sleep"] < 0.5 and set(phase.seconds) == {"sleep", "failing"}
