"""The training loop is deterministic on CPU, a killed run resumes to the same weights, compiled steps match
eager ones, and its batches are the loader's batches (text tokenized once, cut to bucketed lengths)."""

import math

import pytest
import torch

from slimbench.batching import bucket_length, device_batches
from slimbench.data import ImageTensorDataset, TextDataset
from slimbench.errors import ConfigError
from slimbench.models import build_model
from slimbench.tasks import make_task
from slimbench.train import check_recipe, fit

from conftest import IMAGE_INFO, TEXT_INFO, TINY_BERT, TINY_VIT

RECIPE = {"epochs": 2, "batch_size": 16, "lr": 1e-3}


def data():
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (64, 1, 8, 8), dtype=torch.uint8, generator=generator)
    return ImageTensorDataset(images, torch.randint(0, 10, (64,), generator=generator))


def fresh():
    torch.manual_seed(0)
    return build_model(TINY_VIT, IMAGE_INFO, pretrained=False, download=False)


def train(resume=None, loss_fn=None):
    model = fresh()
    history = fit(model, make_task(IMAGE_INFO), data(), torch.device("cpu"), RECIPE, seed=3, loss_fn=loss_fn,
                  resume=resume, progress=False)
    return model, history


def test_training_is_deterministic_and_lowers_the_loss():
    (a, history), (b, _) = train(), train()
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert history["steps"] == 8
    assert sum(history["losses"][-2:]) < sum(history["losses"][:2])


def test_killed_run_resumes_to_the_same_weights(tmp_path, caplog):
    expected, _ = train()
    task = make_task(IMAGE_INFO)
    calls = {"n": 0}

    def dies_in_second_epoch(model, batch):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return task.loss(task.logits(model, batch), batch)

    resume = tmp_path / "resume.pt"
    with pytest.raises(KeyboardInterrupt):
        train(resume, dies_in_second_epoch)
    assert resume.exists()
    with caplog.at_level("INFO", logger="slimbench"):
        resumed, history = train(resume)
    assert f"train: resumed from {resume} after epoch 1 of 2 (step 4)" in caplog.text  # the user sees it resumed
    assert history["steps"] == 8 and not resume.exists()
    assert all(torch.allclose(p, q) for p, q in zip(expected.state_dict().values(), resumed.state_dict().values()))


def test_a_resume_file_is_written_after_each_epoch_but_the_last(tmp_path, monkeypatch):
    """After the last epoch the caller saves the model at once: a resume file (weights and AdamW's two moments,
    3x the model) would only be written and deleted. RECIPE has 2 epochs: one save, after the first."""
    saved = []
    real_save = torch.save
    monkeypatch.setattr(torch, "save", lambda obj, path: (saved.append(obj["epoch"]), real_save(obj, path)))
    train(tmp_path / "resume.pt")
    assert saved == [1] and not (tmp_path / "resume.pt").exists()


def test_epoch_losses_are_the_means_of_each_epochs_steps():
    _, history = train()
    steps = history["losses"]
    assert history["epoch_losses"] == pytest.approx([sum(steps[:4]) / 4, sum(steps[4:]) / 4])


def test_eval_loss_of_uniform_logits_is_log_of_the_class_count():
    class Uniform(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = torch.nn.Parameter(torch.zeros(()))

        def forward(self, x):
            return self.scale * torch.ones(x.shape[0], IMAGE_INFO.num_classes)

    metrics = make_task(IMAGE_INFO).evaluate(Uniform(), data(), torch.device("cpu"), batch_size=24)
    assert metrics["eval_loss"] == pytest.approx(torch.log(torch.tensor(float(IMAGE_INFO.num_classes))).item())


def test_compiled_training_matches_eager_on_cpu(monkeypatch):
    """compile: true runs the same steps through torch.compile: the same losses and weights within float noise.
    The test compiles with the aot_eager backend (TorchDynamo capture and AOTAutograd's forward/backward graphs,
    no C++ code generation, which takes over a minute on a small CPU); the GPU benchmark runs inductor."""
    compile_, aot_eager, graphs = torch.compile, torch._dynamo.lookup_backend("aot_eager"), []

    def counting(graph, inputs):
        graphs.append(graph)
        return aot_eager(graph, inputs)

    monkeypatch.setattr(torch, "compile", lambda model, **options: compile_(model, backend=counting,
                                                                              dynamic=options["dynamic"]))

    def run(recipe):
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
        history = fit(model, make_task(IMAGE_INFO), data(), torch.device("cpu"), recipe, seed=3, progress=False)
        return model, history["losses"]

    (eager, eager_losses), (compiled, compiled_losses) = run(RECIPE), run({**RECIPE, "compile": True})
    assert len(compiled_losses) == 8 and graphs  # the steps ran through the captured graph
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-4, atol=1e-5)
    for p, q in zip(eager.parameters(), compiled.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-5)


def test_compile_option_is_validated():
    for good in (False, True, "default", "reduce-overhead"):
        check_recipe({"compile": good}, "study x")
    with pytest.raises(ConfigError, match="compile must be"):
        check_recipe({"compile": "fast"}, "study x")


def test_bucketed_lengths():
    eager = [bucket_length(n, 128, static_shapes=False) for n in (1, 8, 9, 127, 128)]
    static = [bucket_length(n, limit, static_shapes=True) for n, limit in
              ((5, 128), (33, 128), (100, 128), (129, 512), (300, 512), (40, 48))]
    assert eager == [8, 8, 16, 128, 128]
    assert static == [32, 64, 128, 256, 384, 48]


def test_device_batches_are_the_loaders_batches_normalized():
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (100, 1, 8, 8), dtype=torch.uint8, generator=generator)
    dataset = ImageTensorDataset(images, torch.arange(100))
    batches = list(device_batches(make_task(IMAGE_INFO), dataset, 16, seed=5, device=torch.device("cpu"),
                                  chunk_examples=48))
    order = torch.randperm(100, generator=torch.Generator().manual_seed(5))  # batches()'s shuffle, by hand
    assert [len(b[1]) for b in batches] == [16] * 6 + [4]
    assert torch.equal(torch.cat([b[1] for b in batches]), order)
    expected = (images[order].float() / 255 - 0.5) / 0.5
    assert torch.allclose(torch.cat([b[0] for b in batches]), expected)


def word_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, **{f"w{i}": i + 4 for i in range(20)}}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]",
                                                        special_tokens=[("[CLS]", 2), ("[SEP]", 3)])
    return PreTrainedTokenizerFast(tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]")


def test_text_is_tokenized_once_and_cut_to_each_batchs_bucket():
    words = [" ".join(f"w{(i * 7 + j) % 20}" for j in range(1 + i % 13)) for i in range(40)]
    dataset = TextDataset(words, [i % 2 for i in range(40)])
    task = make_task(TEXT_INFO, word_tokenizer(), max_length=32)
    encoded = task.encode(dataset, torch.device("cpu"))
    batches = list(device_batches(task, encoded, 8, seed=2, device=torch.device("cpu")))
    order = torch.randperm(40, generator=torch.Generator().manual_seed(2)).view(5, 8)
    for batch, rows in zip(batches, order):
        longest = max(len(words[i].split()) for i in rows) + 2  # [CLS] ... [SEP]
        assert batch["input_ids"].shape == (8, -(-longest // 8) * 8)
        for k, i in enumerate(rows):
            ids = [2] + [int(w[1:]) + 4 for w in words[i].split()] + [3]
            assert batch["input_ids"][k].tolist() == ids + [0] * (batch["input_ids"].shape[1] - len(ids))
            assert batch["attention_mask"][k].sum() == len(ids) and batch["labels"][k] == i % 2
    torch.manual_seed(0)
    model = build_model(TINY_BERT, TEXT_INFO, pretrained=False, download=False)
    history = fit(model, task, dataset, torch.device("cpu"), {**RECIPE, "epochs": 1}, seed=2, progress=False)
    assert history["steps"] == 3 and all(map(math.isfinite, history["losses"]))
