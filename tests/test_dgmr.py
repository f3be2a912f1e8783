"""DGMR (Shen et al., 2025): Gram-Schmidt selection, pruning surgery, recovery distillation; activation baseline."""

import pytest
import scipy.linalg
import torch

from slimbench.config import load_plugins
from slimbench.data import ImageTensorDataset
from slimbench.stages import STAGES, Context
from slimbench.surgery import find_mlps
from slimbench.tasks import make_task

from conftest import IMAGE_INFO, LM_INFO, TEXT_INFO

load_plugins()

from methods.dgmr import diversity_order, gram_schmidt_round, kept_hidden, neuron_vectors  # noqa: E402


def qr_pivots(vectors: torch.Tensor) -> list[int]:
    """Column-pivoted QR (LAPACK geqp3) of the neurons-as-columns matrix."""
    _, _, pivots = scipy.linalg.qr(vectors.double().T.numpy(), pivoting=True, mode="economic")
    return pivots.tolist()


def image_context(n=32, seed=0):
    torch.manual_seed(seed)
    images = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8)
    data = ImageTensorDataset(images, torch.randint(0, 10, (n,)))
    return Context(make_task(IMAGE_INFO), data, data, torch.device("cpu"), seed=0, recipe={"batch_size": 8},
                   progress=False)


def vit_input():
    torch.manual_seed(1)
    return torch.randn(3, 1, 8, 8)


@pytest.mark.parametrize("shape,count", [((20, 6), 6), ((40, 12), 7), ((12, 12), 12)])
def test_one_round_equals_column_pivoted_qr(shape, count):
    torch.manual_seed(shape[0])
    vectors = torch.randn(*shape) * torch.rand(shape[0], 1)  # unequal norms: importance matters
    assert gram_schmidt_round(vectors, count).tolist() == qr_pivots(vectors)[:count]


def test_rounds_restart_qr_on_the_neurons_not_yet_kept():
    torch.manual_seed(3)
    vectors = torch.randn(16, 4)
    order = diversity_order(vectors, 11).tolist()
    first = qr_pivots(vectors)[:4]
    rest = [i for i in range(16) if i not in first]
    second = [rest[p] for p in qr_pivots(vectors[rest])[:4]]
    rest2 = [i for i in rest if i not in second]
    third = [rest2[p] for p in qr_pivots(vectors[rest2])[:3]]
    assert order == first + second + third
    assert len(set(order)) == 11


def test_first_pick_is_the_largest_neuron_and_orthogonal_beats_parallel():
    vectors = torch.tensor([[1.0, 0.0, 0.0], [3.0, 0.1, 0.0], [2.9, 0.0, 0.0], [0.0, 0.0, 1.0]])
    # 1 is largest; 2 is nearly parallel to it (tiny residual), 3 is orthogonal, 0 is parallel to 2.
    assert gram_schmidt_round(vectors, 2).tolist() == [1, 3]


def test_duplicated_neurons_are_never_both_kept_before_an_independent_one():
    torch.manual_seed(4)
    independent = torch.randn(10, 8)
    big = 10 * torch.randn(1, 8)
    # neuron 0 and 1 duplicate each other; neuron 2 is a scaled copy; all three have the largest norms.
    vectors = torch.cat([big, big, 1.5 * big, independent])
    order = gram_schmidt_round(vectors, 8).tolist()
    assert order[0] == 2
    assert not {0, 1} & set(order)
    assert set(order[1:]) <= set(range(3, 13))


def test_kept_hidden_is_the_mlp_ratio():
    assert [kept_hidden(768, r) for r in (0.75, 0.5, 0.25, 1.0)] == [576, 384, 192, 768]
    assert kept_hidden(4, 0.01) == 1


@pytest.mark.parametrize("kind,fixture,info", [("vit", "tiny_vit", IMAGE_INFO), ("bert", "tiny_bert", TEXT_INFO),
                                               ("llama", "tiny_llama", LM_INFO)])
def test_keeping_all_neurons_leaves_outputs_identical_and_half_keeps_shapes(kind, fixture, info, request):
    model = request.getfixturevalue(fixture)
    torch.manual_seed(1)
    inputs = {"x": vit_input()} if kind == "vit" else {"input_ids": torch.randint(0, 100, (3, 12))}

    def run(m):
        with torch.no_grad():
            return (m(inputs["x"]) if kind == "vit" else m(**inputs).logits).float()

    before, hidden = run(model), find_mlps(model)[0].hidden
    ctx = Context(make_task(info), None, None, torch.device("cpu"), seed=0)
    assert torch.equal(run(STAGES.get("dgmr")(model, ctx, ratio=1.0)), before)
    pruned = STAGES.get("dgmr")(model, ctx, ratio=0.5)
    assert run(pruned).shape == before.shape
    assert all(m.hidden == hidden // 2 for m in find_mlps(pruned))
    assert all(lin.out_features == m.output.in_features for m in find_mlps(pruned) for lin in m.inputs)


def test_dgmr_keeps_exactly_the_selected_neurons(tiny_vit):
    mlp = find_mlps(tiny_vit)[0]
    vectors = neuron_vectors(mlp)
    expected = sorted(diversity_order(vectors, kept_hidden(mlp.hidden, 0.25)).tolist())
    fc1 = mlp.owner.fc1.weight.detach().clone()
    STAGES.get("dgmr")(tiny_vit, Context(make_task(IMAGE_INFO), None, None, torch.device("cpu"), 0), ratio=0.25)
    assert torch.equal(find_mlps(tiny_vit)[0].owner.fc1.weight, fc1[expected])


def test_dgmr_kd_moves_the_student_towards_the_teacher_without_labels(tiny_vit):
    from methods.dgmr import outputs_and_features

    ctx = image_context()
    teacher = __import__("copy").deepcopy(tiny_vit).eval()
    ctx._teacher = teacher
    student = STAGES.get("dgmr")(tiny_vit, ctx, ratio=0.25)
    batch = ctx.task.to_device(next(iter(ctx.task.loader(ctx.train_set, 32))), ctx.device)

    def gap():
        with torch.no_grad():
            s, t = outputs_and_features(student.eval(), batch), outputs_and_features(teacher, batch)
        return float(torch.nn.functional.mse_loss(s[1], t[1]))

    before = gap()
    ctx.train_set.labels.fill_(-100)  # labels are never read: cross-entropy on -100 everywhere would be NaN
    STAGES.get("dgmr_kd")(student, ctx, epochs=20, lr=3e-3, warmup=0.1, weight_decay=0.0, batch_size=8,
                          fraction=0.5, output_weight=1.0, feature_weight=1.0)
    assert gap() < 0.5 * before


def test_activation_baseline_keeps_the_most_active_neurons(tiny_vit):
    ctx = image_context()
    mlp = find_mlps(tiny_vit)[0]
    with torch.no_grad():  # silence half the neurons of the first MLP: they must be the ones removed
        mlp.owner.fc1.weight[::2] = 0
        mlp.owner.fc1.bias[::2] = -10.0
    kept_rows = mlp.owner.fc1.weight[1::2].detach().clone()
    pruned = STAGES.get("mlp_activation")(tiny_vit, ctx, ratio=0.5, num_examples=16, batch_size=8)
    assert torch.equal(find_mlps(pruned)[0].owner.fc1.weight, kept_rows)
    with torch.no_grad():
        assert pruned(vit_input()).shape == (3, 10)
