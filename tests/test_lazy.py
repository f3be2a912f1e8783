"""Start-up cost (issue 17): reading and validating a config, which loads every method and baseline, leaves
pandas and networkx unimported, and what a training job imports leaves scikit-learn unimported; they load on
first use, and then behave as the real modules."""

import os
import subprocess
import sys

from conftest import REPO
from slimbench.lazy import lazy_module


def test_validating_the_default_config_imports_neither_pandas_nor_networkx():
    probe = ("import sys; from slimbench.config import load_config; load_config('config/default.yaml'); "
             "print(sorted(m for m in ('pandas.core.frame', 'networkx.classes') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[-2] == "[]", out.stdout + out.stderr


def test_sklearn_is_imported_by_neither_a_training_job_nor_accuracy_but_by_f1():
    probe = ("import sys; import slimbench.cli, slimbench.pipeline, slimbench.stages; "
             "from slimbench.config import load_plugins; load_plugins(); "  # every method and baseline, as a job
             "from slimbench.metrics.task import classification_metrics as metrics; "
             "print(metrics([0, 1, 1, 0], [0, 1, 0, 0], 'accuracy'), 'sklearn' in sys.modules); "
             "print(metrics([0, 1, 1, 0], [0, 1, 0, 0], 'f1'), 'sklearn' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.splitlines() == ["{'accuracy': 0.75} False",
                                       "{'f1': 0.6666666666666666, 'accuracy': 0.75} True"], out.stdout + out.stderr


def test_a_lazy_module_runs_its_code_on_first_use_and_is_the_real_module(tmp_path):
    (tmp_path / "noisy.py").write_text("print('noisy runs')\nVALUE = 7\n")
    probe = ("from slimbench.lazy import lazy_module; noisy = lazy_module('noisy'); print('created'); "
             "import noisy as again; print(again is noisy, noisy.VALUE)")
    out = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": f"{tmp_path}{os.pathsep}{REPO}"})
    assert out.stdout.splitlines() == ["created", "noisy runs", "True 7"], out.stdout + out.stderr
    assert lazy_module("json") is sys.modules["json"]  # already imported: returned as it is
