"""The training loop is deterministic on CPU and a killed run resumes to the same weights."""

import pytest
import torch

from slimbench.data import ImageTensorDataset
from slimbench.models import build_model
from slimbench.tasks import make_task
from slimbench.train import fit

from conftest import IMAGE_INFO, TINY_VIT

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


def test_killed_run_resumes_to_the_same_weights(tmp_path):
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
    resumed, history = train(resume)
    assert history["steps"] == 8 and not resume.exists()
    assert all(torch.allclose(p, q) for p, q in zip(expected.state_dict().values(), resumed.state_dict().values()))


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
