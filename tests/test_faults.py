"""Fault injection: what a hostile or careless user, a kill -9 or a second run at the same time can do, each
ending in one clear line and exit status 2 before any work, or in the correct result.

Everything is tiny (a one-block ViT on 80 synthetic 28x28 images) and kills are real SIGKILLs of forked copies
of this process at chosen points, so the suite pays for imports once. Expected values come from an
uninterrupted run, from hand-written files, or from the files themselves (bytes, counts), never from the
code under test.
"""

from __future__ import annotations

import gzip
import importlib
import io
import json
import os
import signal
import subprocess
import traceback
import zipfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from slimbench import checkpoint, cli
from slimbench.config import REPO, Experiment, load_config, validate_config
from slimbench.data import load_dataset
from slimbench.estimate import Estimate, add_training, estimate
from slimbench.errors import CorruptFileError, SlimbenchError, UnsafeInputError
from slimbench.integrity import read_sealed_json, write_sealed_json
from slimbench.models import build_model
from slimbench.results import METRICS_FILE
from conftest import IMAGE_INFO, TINY_VIT

N_IMAGES = 80


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file written by hand from its definition (LeCun et al.): 0, 0, 8 (uint8), ndim, big-endian dims."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, n: int = N_IMAGES, labels: np.ndarray | None = None) -> Path:
    """MNIST-layout test files whose class is visible (a bright row at the label's height)."""
    rng = np.random.default_rng(0)
    y = np.arange(n) % 10 if labels is None else labels
    x = rng.integers(0, 60, (n, 28, 28))
    for i, label in enumerate(y[:n]):
        x[i, 2 + 2 * (label % 10)] = 250
    folder = root / "mnist"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(x)))
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(y)))
    return folder


def write_cifar_zip(path: Path, per_class: int, colour: int) -> None:
    """A CIFAR-10-layout train.zip (train/<class>/<i>.jpg) of flat-coloured JPEGs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as archive:
        for c, name in enumerate(("airplane", "automobile")):
            for i in range(per_class):
                buffer = io.BytesIO()
                Image.new("RGB", (32, 32), (colour, 10 * c, i)).save(buffer, format="JPEG")
                archive.writestr(f"train/{name}/{i}.jpg", buffer.getvalue())


def base_config(tmp: Path) -> dict[str, Any]:
    write_mnist(tmp / "data")
    return {
        "name": "faults", "data_root": str(tmp / "data"), "cache_dir": str(tmp / "cache"),
        "results_dir": str(tmp / "results"), "reports_dir": str(tmp / "reports"), "device": "cpu",
        "progress": False, "threads": 1,
        "evaluation": {"batch_size": 64, "flops": False,
                       "latency": {"batch_size": 1, "threads": 1, "warmup": 0, "repeats": 1, "cuda": False}},
        "datasets": {"tiny": {"loader": "mnist", "split": "test-split", "eval_fraction": 0.25}},
        "models": {"vit_nano": {"family": "timm", "arch": "vit_tiny_patch16_224", "patch_size": 7, "embed_dim": 16,
                                "depth": 1, "num_heads": 1}},
        "studies": {"s": {"grid": [{"datasets": ["tiny"], "models": ["vit_nano"],
                                    "base": {"epochs": 3, "batch_size": 16, "lr": 0.003}}],
                          "seeds": [0], "chains": ["base", "base+kd", "base+int8"],
                          "stages": {"kd": {"epochs": 2}}, "figures": ["metric_vs_params"]}},
    }


def write_config(config: dict[str, Any], path: Path) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


def start_fork(action: Callable[[], Any], patches: dict[str, Callable[[Callable], Callable]]) -> int:
    """Start ``action`` in a forked copy of this process with ``patches`` (dotted name -> wrapper) applied; returns
    its pid. The child exits with the action's status and never returns into pytest."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            for dotted, wrap in patches.items():
                module, _, name = dotted.rpartition(".")
                owner = importlib.import_module(module)
                setattr(owner, name, wrap(getattr(owner, name)))
            code = action()
        except BaseException:
            traceback.print_exc()
        finally:
            os._exit(code)
    return pid


def in_fork(action: Callable[[], Any], patches: dict[str, Callable[[Callable], Callable]]) -> int:
    """The wait status of ``action`` run to its end (or its kill) in a forked copy of this process."""
    return os.waitpid(start_fork(action, patches), 0)[1]


def kill_on_call(number: int) -> Callable[[Callable], Callable]:
    """A wrapper that SIGKILLs the process on entering the ``number``-th call (1-based)."""
    def wrap(fn: Callable) -> Callable:
        calls = [0]

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            calls[0] += 1
            if calls[0] == number:
                os.kill(os.getpid(), signal.SIGKILL)
            return fn(*args, **kwargs)
        return wrapped
    return wrap


def study(config_path: Path) -> Callable[[], int]:
    return lambda: cli.main(["study", "--config", str(config_path), "--study", "s"])


def saved_files(results: Path) -> dict[str, bytes]:
    return {str(p.relative_to(results)): p.read_bytes() for p in sorted(results.rglob("model.safetensors"))
            if p.parent.name == "model"}


def results_of(results: Path) -> dict[str, Any]:
    """Per experiment: task metrics and the exact cost figures (timings and memory vary run to run)."""
    out = {}
    for path in sorted(results.rglob(METRICS_FILE)):
        record = json.loads(path.read_text())
        exact = {k: record["cost"][k] for k in ("params", "stored_bits", "size_bytes")}
        out[str(path.relative_to(results))] = (record["metrics"], exact, record["threads"]["torch"])
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Any]:
    """An uninterrupted `slimbench study` of the tiny config: the bits every resumed run must reproduce."""
    tmp = tmp_path_factory.mktemp("reference")
    config = base_config(tmp)
    path = write_config(config, tmp / "config.yaml")
    threads = torch.get_num_threads()
    try:
        assert study(path)() == 0
    finally:
        torch.set_num_threads(threads)
    results = Path(config["results_dir"])
    return {"tmp": tmp, "config": config, "path": path, "weights": saved_files(results),
            "results": results_of(results)}


def test_kill_9_at_each_step_then_the_readme_command_resumes_bit_identically(tmp_path, reference) -> None:
    config = base_config(tmp_path)
    path = write_config(config, tmp_path / "config.yaml")
    kills = [  # each run is killed one step further on; the last, `slimbench study` as typed, completes
        {"torch.save": kill_on_call(2)},                                   # base training, after its 1st epoch
        {"slimbench.checkpoint.file_sha256": kill_on_call(1)},             # base saved but not yet complete
        {"slimbench.checkpoint.save_model": kill_on_call(2)},              # distillation (kd) done, not saved
        {"slimbench.pipeline.measure_cost": kill_on_call(1)},              # evaluating the kd model
    ]
    results = Path(config["results_dir"])
    for patch in kills:
        status = in_fork(study(path), patch)
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, patch
        for model_dir in results.rglob("model"):  # complete or absent
            assert {"arch.json", "model.safetensors", "stage.json"} <= {p.name for p in model_dir.iterdir()}
        for metrics in results.rglob(METRICS_FILE):  # whole and matching their checksum
            read_sealed_json(metrics)
    proc = subprocess.run(["slimbench", "study", "--config", str(path), "--study", "s"], capture_output=True,
                          text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert saved_files(results) == reference["weights"]
    assert results_of(results) == reference["results"]
    assert not list(results.rglob("*.tmp")) and not list(results.rglob("resume.pt"))  # nothing left behind
    assert len(reference["results"]) == 3 and {r[2] for r in reference["results"].values()} == {1}


def test_two_studies_at_once_build_each_model_once(tmp_path) -> None:
    config = base_config(tmp_path)
    path = write_config(config, tmp_path / "config.yaml")
    trained = tmp_path / "trained.log"

    def logged(fn: Callable) -> Callable:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            with trained.open("a") as log:
                log.write(f"{os.getpid()}\n")
            return fn(*args, **kwargs)
        return wrapped

    patches = {"slimbench.pipeline.fit": logged, "baselines.distill.fit": logged}
    pids = [start_fork(study(path), patches) for _ in range(2)]
    statuses = [os.waitpid(pid, 0)[1] for pid in pids]
    assert [os.WIFEXITED(s) and os.WEXITSTATUS(s) for s in statuses] == [0, 0]
    assert len(trained.read_text().split()) == 2  # one base training and one distillation, not two of each
    assert len(list(Path(config["results_dir"]).rglob(METRICS_FILE))) == 3


def test_a_corrupt_model_or_metrics_file_is_named_moved_aside_and_rebuilt(reference, capsys) -> None:
    results = Path(reference["config"]["results_dir"])
    experiment = results / "faults/s/tiny/vit_nano/seed0"
    weights = experiment / "base+kd/model/model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-100])  # truncated
    with pytest.raises(CorruptFileError, match=r"model\.safetensors does not match the checksum.*rerun"):
        checkpoint.load_model(weights.parent)
    assert not weights.parent.exists() and (experiment / "base+kd/model.corrupt").is_dir()
    metrics = experiment / "base" / METRICS_FILE
    record = json.loads(metrics.read_text())
    record["metrics"]["accuracy"] += 0.5  # altered, still valid JSON, checksum left as it was
    metrics.write_text(json.dumps(record))
    assert cli.main(["evaluate", "--config", str(reference["path"]), str(experiment / "base+int8")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "checksum mismatch" in err and str(metrics) in err
    assert not metrics.exists()
    assert cli.main(["run", "--config", str(reference["path"]), str(experiment / "base+kd")]) == 0  # rebuilds both
    assert saved_files(results) == reference["weights"]
    assert results_of(results) == reference["results"]


def test_a_stage_fixed_since_its_model_was_built_is_rebuilt_by_slimbench_run(reference, monkeypatch) -> None:
    """`slimbench run` (and `study`) rebuild a step whose saved record names an older revision of its stage, and
    evaluate it again; the base and the other chains stay as they were, and the new record names the revision."""
    from dataclasses import replace

    from slimbench.stages import STAGES

    results = Path(reference["config"]["results_dir"])
    experiment = results / "faults/s/tiny/vit_nano/seed0"
    assert cli.main(["run", "--config", str(reference["path"]), str(experiment / "base+kd")]) == 0
    untouched = {p: p.stat().st_mtime_ns for p in (experiment / "base/model/arch.json",
                                                  experiment / "base+int8/model/arch.json",
                                                  experiment / "base+kd/model/arch.json")}
    assert cli.main(["run", "--config", str(reference["path"]), str(experiment / "base+kd")]) == 0  # done: nothing
    assert {p: p.stat().st_mtime_ns for p in untouched} == untouched
    monkeypatch.setitem(STAGES._items, "kd", replace(STAGES.get("kd"), revision=2))
    assert cli.main(["run", "--config", str(reference["path"]), str(experiment / "base+kd")]) == 0
    kd = experiment / "base+kd"
    assert json.loads((kd / "model/arch.json").read_text())["stages"][-1]["revision"] == 2
    assert json.loads((kd / METRICS_FILE).read_text())["stages"][-1]["revision"] == 2  # evaluated again
    assert (kd / "model/arch.json").stat().st_mtime_ns > untouched[kd / "model/arch.json"]
    for path in (experiment / "base/model/arch.json", experiment / "base+int8/model/arch.json"):
        assert path.stat().st_mtime_ns == untouched[path]
    assert saved_files(results) == reference["weights"]  # the same code: the same bits


def test_a_fixed_prefix_that_is_an_experiment_of_its_own_is_evaluated_again(tmp_path, monkeypatch) -> None:
    """Rebuilding base+kd for base+kd+int8 replaces base+kd's model, so its own metrics are made again too."""
    from dataclasses import replace

    from slimbench.stages import STAGES

    config = base_config(tmp_path)
    config["studies"]["s"]["chains"] = ["base", "base+kd", "base+kd+int8"]
    path = write_config(config, tmp_path / "config.yaml")
    assert study(path)() == 0
    monkeypatch.setitem(STAGES._items, "kd", replace(STAGES.get("kd"), revision=2))
    experiment = Path(config["results_dir"]) / "faults/s/tiny/vit_nano/seed0"
    assert cli.main(["run", "--config", str(path), str(experiment / "base+kd+int8")]) == 0
    for chain in ("base+kd", "base+kd+int8"):
        assert json.loads((experiment / chain / METRICS_FILE).read_text())["stages"][0]["revision"] == 2, chain


def test_garbage_json_is_reported_not_read() -> None:
    path = Path(os.environ.get("TMPDIR", "/tmp")) / f"garbage-{os.getpid()}.json"
    write_sealed_json(path, {"metrics": {"accuracy": 0.5}})
    assert read_sealed_json(path)["metrics"] == {"accuracy": 0.5}
    path.write_text('{"metrics": {"accur')
    with pytest.raises(CorruptFileError, match="unreadable JSON"):
        read_sealed_json(path)
    assert not path.exists()
    path.with_name(path.name + ".corrupt").unlink()


@pytest.mark.parametrize("damage,message", [
    (lambda f: f.write_bytes(f.read_bytes()[:200]), "corrupt"),                                  # truncated gzip
    (lambda f: f.write_bytes(gzip.compress(b"\x00\x00\x0d\x03" + bytes(40))), "not an IDX file"),  # wrong header
    (lambda f: f.write_bytes(gzip.compress(gzip.decompress(f.read_bytes())[:-50])), "truncated"),  # short body
])
def test_corrupt_idx_files_give_one_error_naming_the_file(tmp_path, damage, message) -> None:
    folder = write_mnist(tmp_path)
    damage(folder / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(CorruptFileError, match=message) as error:
        load_dataset({"loader": "mnist", "split": "test-split"}, tmp_path, False, tmp_path / "cache")
    assert "t10k-images-idx3-ubyte.gz" in str(error.value) and "\n" not in str(error.value)


def test_short_or_wrong_label_files_are_refused(tmp_path) -> None:
    write_mnist(tmp_path, labels=np.arange(N_IMAGES - 5) % 10)  # 75 labels for 80 images
    with pytest.raises(CorruptFileError, match=r"labels of shape \[75\]"):
        load_dataset({"loader": "mnist", "split": "test-split"}, tmp_path, False, tmp_path / "cache")
    write_mnist(tmp_path, labels=np.full(N_IMAGES, 12))
    with pytest.raises(CorruptFileError, match="label 12"):
        load_dataset({"loader": "mnist", "split": "test-split"}, tmp_path, False, tmp_path / "cache")


def test_the_decoded_image_cache_follows_the_files_and_options(tmp_path) -> None:
    cache = tmp_path / "cache"
    spec = {"loader": "cifar10", "split": "train-split", "eval_fraction": 0.5}
    write_cifar_zip(tmp_path / "a/cifar10/train.zip", per_class=9, colour=200)
    write_cifar_zip(tmp_path / "b/cifar10/train.zip", per_class=1, colour=20)
    first = load_dataset(spec, tmp_path / "a", False, cache)
    other_root = load_dataset(spec, tmp_path / "b", False, cache)  # the case: same cache, other root
    assert len(first.train) + len(first.eval) == 18 and len(other_root.train) + len(other_root.eval) == 2
    assert int(other_root.train.images[0, 0, 0, 0]) < 60 < int(first.train.images[0, 0, 0, 0])
    write_cifar_zip(tmp_path / "a/cifar10/train.zip", per_class=3, colour=20)  # the file replaced in place
    os.utime(tmp_path / "a/cifar10/train.zip", ns=(1, 1))
    replaced = load_dataset(spec, tmp_path / "a", False, cache)
    assert len(replaced.train) + len(replaced.eval) == 6


@pytest.mark.parametrize("damage", ["truncated", "bad_jpeg"])
def test_corrupt_zip_gives_one_error_naming_the_file(tmp_path, damage) -> None:
    archive = tmp_path / "cifar10/train.zip"
    write_cifar_zip(archive, per_class=2, colour=100)
    if damage == "truncated":
        archive.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    else:
        with zipfile.ZipFile(archive, "a") as handle:
            handle.writestr("train/airplane/broken.jpg", b"\xff\xd8\xff not a jpeg")
    with pytest.raises(CorruptFileError) as error:
        load_dataset({"loader": "cifar10", "split": "train-split"}, tmp_path, False, tmp_path / "cache")
    assert str(archive) in str(error.value) and "\n" not in str(error.value)


@pytest.fixture
def planted(tmp_path) -> tuple[Path, Path]:
    """A model folder whose config asks for its own configuration_*.py, which would leave a marker file."""
    folder, marker = tmp_path / "evil_model", tmp_path / "CODE_RAN"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({
        "model_type": "evilbert", "hidden_size": 8,
        "auto_map": {"AutoConfig": "configuration_evil.EvilConfig",
                     "AutoModelForSequenceClassification": "configuration_evil.EvilConfig"}}))
    (folder / "configuration_evil.py").write_text(
        f"open({str(marker)!r}, 'w').write('ran')\n"
        "from transformers import PretrainedConfig\n\n\nclass EvilConfig(PretrainedConfig):\n    model_type = 'evilbert'\n")
    return folder, marker


def test_no_code_from_a_model_folder_runs(tmp_path, planted) -> None:
    folder, marker = planted
    info = IMAGE_INFO
    specs = [{"family": "hf_classifier", "source": str(folder), "trust_remote_code": True},
             {"family": "hf_classifier", "source": str(folder)},
             {"family": "hf_classifier", "config": {"model_type": "evilbert", "auto_map": {"AutoConfig": "x.Y"}}},
             {"family": "hf_classifier", "config": {"model_type": "evilbert"}}]
    for spec in specs:  # a saved model whose arch.json was edited
        saved = tmp_path / "saved"
        checkpoint.save_model(build_model(TINY_VIT, info, False, False), saved, TINY_VIT, info, [])
        arch = json.loads((saved / "arch.json").read_text())
        (saved / "arch.json").write_text(json.dumps({**arch, "model": spec}))
        with pytest.raises(UnsafeInputError, match="never|built-in"):
            checkpoint.load_model(saved)
    for pretrained in (False, True):  # a config's model source pointing at the folder
        with pytest.raises(UnsafeInputError, match="remote code is never run"):
            build_model({"family": "hf_classifier", "source": str(folder)}, info, pretrained, False)
    with pytest.raises(UnsafeInputError, match="never accepted"):
        build_model({"family": "hf_classifier", "source": str(folder), "trust_remote_code": True}, info, True, False)
    config = base_config(tmp_path)
    config["models"]["evil"] = {"family": "hf_classifier", "source": str(folder), "trust_remote_code": True}
    with pytest.raises(UnsafeInputError, match="trust_remote_code"):
        validate_config(config)
    assert not marker.exists()


def test_no_name_or_folder_escapes_the_results_folder(tmp_path) -> None:
    for parts in [("..", "s", "d", "m"), ("c", "..", "d", "m"), ("c", "s", "..", "m"), ("c", "s", "d", ".."),
                  ("c", "s", "d", ".hidden"), ("c", "s/x", "d", "m")]:
        with pytest.raises(UnsafeInputError, match="safe folder name"):
            Experiment(*parts, 0, "base")
    with pytest.raises(SlimbenchError):
        Experiment("c", "s", "d", "m", 0, "base+../../x")
    with pytest.raises(UnsafeInputError, match=r"'\.\.'"):
        Experiment.from_directory("results/faults/s/tiny/../../x/seed0/base")


# (edit of the tiny config, text the one-line error must contain). Each must fail before any work.
def study_edit(**changes: Any) -> Callable[[dict], None]:
    return lambda c: c["studies"]["s"].update(changes)


def grid_edit(**changes: Any) -> Callable[[dict], None]:
    return lambda c: c["studies"]["s"]["grid"][0].update(changes)


def recipe_edit(**changes: Any) -> Callable[[dict], None]:
    return lambda c: c["studies"]["s"]["grid"][0]["base"].update(changes)


def dataset_edit(**changes: Any) -> Callable[[dict], None]:
    return lambda c: c["datasets"]["tiny"].update(changes)


def rename(section: str, new: str) -> Callable[[dict], None]:
    def edit(c: dict) -> None:
        if section == "studies":
            c["studies"][new] = c["studies"].pop("s")
        else:
            key = {"datasets": "tiny", "models": "vit_nano"}[section]
            c[section][new] = c[section].pop(key)
            c["studies"]["s"]["grid"][0][section] = [new]
    return edit


BAD_CONFIGS = [
    # names: folders below results/
    (lambda c: c.update(name=".."), "name"),
    (lambda c: c.update(name="../outside"), "name"),
    (lambda c: c.update(name=".hidden"), "name"),
    (lambda c: c.update(name="a/b"), "name"),
    (rename("studies", ".."), "studies"),
    (rename("studies", "a/b"), "studies"),
    (rename("studies", ".s"), "studies"),
    (rename("datasets", ".."), "datasets"),
    (rename("datasets", "x..y"), "datasets"),
    (rename("models", ".."), "models"),
    (rename("models", "m/../../x"), "models"),
    (grid_edit(datasets=[".."]), "not allowed"),
    (grid_edit(models=["../vit_nano"]), "not allowed"),
    # numbers and ranges of the training recipe
    (recipe_edit(lr="fast"), "lr"),
    (recipe_edit(lr=0), "lr"),
    (recipe_edit(lr=-1e-3), "lr"),
    (recipe_edit(lr=1e3), "lr"),
    (recipe_edit(lr="1e3"), "lr"),
    (recipe_edit(epochs=-1), "epochs"),
    (recipe_edit(epochs=2.5), "epochs"),
    (recipe_edit(epochs="many"), "epochs"),
    (recipe_edit(epochs="1e9"), "max_epochs"),
    (recipe_edit(epochs=20000), "max_epochs"),
    (recipe_edit(epochs=9000, batch_size=1), "max_steps_per_training"),
    (lambda c: c.update(limits={"max_total_steps": 100}), "max_total_steps"),
    (recipe_edit(batch_size=0), "batch_size"),
    (recipe_edit(batch_size=8.5), "batch_size"),
    (recipe_edit(weight_decay=-0.1), "weight_decay"),
    (recipe_edit(weight_decay="lots"), "weight_decay"),
    (recipe_edit(warmup=1.0), "warmup"),
    (recipe_edit(warmup=-0.1), "warmup"),
    (recipe_edit(max_steps=0), "max_steps"),
    (recipe_edit(max_steps=2.5), "max_steps"),
    (recipe_edit(grad_clip=-1), "grad_clip"),
    (recipe_edit(optimizer="adam"), "optimizer"),
    (recipe_edit(schedule="linear"), "schedule"),
    (recipe_edit(eval_batch_size=0), "eval_batch_size"),
    (recipe_edit(epoch=3), "unknown training option"),
    # dataset options: fractions, sizes, splits
    (dataset_edit(eval_fraction=1.0), "eval_fraction"),
    (dataset_edit(eval_fraction=0), "eval_fraction"),
    (dataset_edit(eval_fraction=-0.2), "eval_fraction"),
    (dataset_edit(eval_fraction="half"), "eval_fraction"),
    (dataset_edit(train_size=0), "train_size"),
    (dataset_edit(train_size=-5), "train_size"),
    (dataset_edit(eval_size=1.5), "eval_size"),
    (dataset_edit(split="train-split"), "split 'train-split' is not one of"),
    (dataset_edit(split="everything"), "split"),
    (dataset_edit(split_seed=-1), "split_seed"),
    (dataset_edit(subset_seed="x"), "subset_seed"),
    (dataset_edit(loader="mnistt"), "unknown dataset 'mnistt'"),
    (dataset_edit(splitt="x"), "unknown option"),
    # task options
    (study_edit(task={"max_length": 0}), "max_length"),
    (study_edit(task={"max_length": "long"}), "max_length"),
    (study_edit(task={"block_size": 1}), "block_size"),
    (study_edit(task={"maxlength": 64}), "maxlength"),
    # duplicates: the same experiment twice would read as a second seed
    (study_edit(chains=["base", "base+kd", "base+kd"]), "listed twice"),
    (study_edit(chains=["base", "base+mlp_magnitude-0.5", "base+mlp_magnitude-0.50"]), "same steps"),
    (study_edit(seeds=[0, 0]), "listed twice"),
    (study_edit(seeds=["0"]), "seeds"),
    (study_edit(seeds=[-1]), "seeds"),
    (grid_edit(datasets=["tiny", "tiny"]), "listed twice"),
    (lambda c: c["studies"]["s"]["grid"].append(dict(c["studies"]["s"]["grid"][0])), "two grid entries"),
    # stages, chains, figures, models
    (study_edit(chains=["base+kd-3"]), "takes no value"),
    (study_edit(chains=["base+mlp_magnitude-1.5"]), "out of range"),
    (study_edit(chains=["kd"]), "chains"),
    (study_edit(chains=["base+nothing"]), "unknown stage"),
    (study_edit(stages={"kd": {"epochs": -1}}), "out of range"),
    (study_edit(stages={"kd": {"epochs": 50000}}), "max_epochs"),
    (study_edit(stages={"kd": {"temperature": 0}}), "out of range"),
    (study_edit(stages={"kd": {"speed": 1}}), "no parameter 'speed'"),
    (study_edit(figures=["pie"]), "unknown figure"),
    (study_edit(chains=[]), "chains"),
    (study_edit(grid=[]), "grid"),
    (lambda c: c.update(studies={}), "studies"),
    (lambda c: c["models"]["vit_nano"].update(family="keras"), "unknown model family"),
    (lambda c: c["models"]["vit_nano"].update(trust_remote_code=True), "trust_remote_code"),
    (lambda c: c["models"].update(bert={"family": "hf_classifier", "config": {"model_type": "bert",
                                                                              "auto_map": {"AutoConfig": "a.B"}}}),
     "auto_map"),
    (grid_edit(models=["minilm"]), "is for text_classification"),
    # top level
    (lambda c: c.update(device="tpu"), "device"),
    (lambda c: c.update(threads=0), "threads"),
    (lambda c: c.update(threads="all"), "threads"),
    (lambda c: c.update(limits={"max_epochs": 0}), "max_epochs"),
    (lambda c: c.update(unknown_key=1), "unknown_key"),
    (lambda c: c.update(evaluation={"batch_size": 0}), "batch_size"),
    (lambda c: c.update(plugins=["no_such_module_xyz"]), "cannot be imported"),
]


def test_the_table_has_enough_cases() -> None:
    assert len(BAD_CONFIGS) >= 60


@pytest.mark.parametrize("edit,message", BAD_CONFIGS, ids=[f"bad{i:02d}" for i in range(len(BAD_CONFIGS))])
def test_a_bad_config_is_one_line_and_exit_2_before_any_work(tmp_path, capsys, edit, message) -> None:
    config = base_config(tmp_path)
    edit(config)
    path = write_config(config, tmp_path / "config.yaml")
    before = sorted(p.name for p in tmp_path.iterdir())
    assert cli.main(["plan", "--config", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("slimbench: error:"), err
    assert message is None or message in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written: no results, no cache


def test_numbers_in_every_yaml_spelling_are_numbers(tmp_path) -> None:
    text = yaml.safe_dump(base_config(tmp_path)).replace("lr: 0.003", "lr: 3e-3").replace("epochs: 2", "epochs: 2e0")
    assert "3e-3" in text and "2e0" in text
    raw = yaml.safe_load(text)
    assert raw["studies"]["s"]["grid"][0]["base"]["lr"] == "3e-3"  # what YAML 1.1 gives
    config = validate_config(raw)
    assert config["studies"]["s"]["grid"][0]["base"]["lr"] == 0.003
    assert config["studies"]["s"]["stages"]["kd"]["epochs"] == 2 and isinstance(config["studies"]["s"]["stages"]["kd"]["epochs"], int)


def test_the_cost_estimate_counts_steps_by_hand(tmp_path) -> None:
    config = base_config(tmp_path)
    config["datasets"]["tiny"]["train_size"] = 60
    # 60 examples in batches of 16: 4 steps per epoch; base 3 epochs, kd 2 epochs, int8 does not train
    assert estimate(validate_config(config)).text().startswith("estimated cost: 2 training(s), at most 20 "
                                                               "optimizer steps on 300 examples")


def test_shipped_configs_stay_under_their_limits() -> None:
    for name in ("smoke", "default", "paper"):
        load_config(REPO / "config" / f"{name}.yaml")


def test_the_cost_estimate_counts_a_stage_on_a_fraction_of_the_data(tmp_path) -> None:
    """dgmr_kd trains on ``fraction`` of the train set: 1,000 examples x 0.1 = 100, in batches of 16 = 7 steps per
    epoch, 10 epochs = 70 steps (the estimate had counted all 1,000: 630 steps)."""
    total = Estimate()
    limits = {"max_epochs": 100, "max_steps_per_training": 10**6}
    add_training(total, limits, "here", {"epochs": 10, "batch_size": 16, "fraction": 0.1}, 1000, 2)
    assert (total.trainings, total.steps, total.examples) == (2, 140, 2000)
