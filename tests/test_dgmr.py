"""DGMR (Shen et al., 2025): Gram-Schmidt selection, pruning surgery, recovery distillation; activation and
Taylor baselines."""

import pytest
import scipy.linalg
import torch

from slimbench.config import load_plugins
from slimbench.data import ImageTensorDataset
from slimbench.errors import ConfigError
from slimbench.stages import STAGES, Context
from slimbench.surgery import find_mlps
from slimbench.tasks import make_task

from conftest import IMAGE_INFO, LM_INFO, TEXT_INFO

load_plugins()

from methods.dgmr import diversity_order, gram_schmidt_round, kd_recipe, kept_hidden  # noqa: E402


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


def test_kept_hidden_is_the_share_of_hidden_neurons_kept():
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


class HandMLP(torch.nn.Module):
    """fc1: 3 -> 5 hidden neurons, fc2: 5 -> 3, with the literal weights of the known-answer tests below."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(3, 5), torch.nn.Linear(5, 3)
        with torch.no_grad():
            self.fc1.weight.copy_(HAND_FC1)
            self.fc1.bias.copy_(HAND_FC1_BIAS)
            self.fc2.weight.copy_(HAND_FC2)
            self.fc2.bias.copy_(torch.tensor([0.5, -0.5, 0.25]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.nn.functional.gelu(self.fc1(x)))


# fc1 rows w_i (neuron i), norms |w_i|: 3, 2, sqrt5 = 2.236, 1, sqrt6 = 2.449.
HAND_FC1 = torch.tensor([[3.0, 0.0, 0.0],
                         [0.0, 2.0, 0.0],
                         [2.0, 1.0, 0.0],
                         [0.0, 0.0, 1.0],
                         [1.0, 1.0, 2.0]])
# Bias and fc2 are chosen so that every criterion that reads them picks neuron 3 first: appending the bias
# gives |(0, 0, 1, 5)| = 5.10 > 3, fc2 column 3 has norm 10 (scaling rows by it or using fc2's columns).
HAND_FC1_BIAS = torch.tensor([0.0, 0.0, 0.0, 5.0, 0.0])
HAND_FC2 = torch.tensor([[1.0, 0.0, 0.0, 0.0, 1.0],
                         [0.0, 1.0, 0.0, 0.0, 1.0],
                         [0.0, 0.0, 1.0, 10.0, 0.0]])
# DGMR order by hand (N = 3, so round 1 picks 3 neurons, round 2 restarts on the original rows of the rest):
#   round 1, step 1: largest norm is w0 (3). Remove the e1 component from the others: w1 = (0,2,0) |2|,
#     w2 = (0,1,0) |1|, w3 = (0,0,1) |1|, w4 = (0,1,2) |sqrt5 = 2.236|.
#   step 2: largest residual is w4 (2.236 > 2), u = (0,1,2)/sqrt5. Subtract projections on u:
#     w1 = (0,2,0) - 2/5 (0,1,2) = (0, 1.6, -0.8), |w1|^2 = 3.2 (1.789); w2 = (0,1,0) - 1/5 (0,1,2) =
#     (0, 0.8, -0.4), |w2|^2 = 0.8; w3 = (0,0,1) - 2/5 (0,1,2) = (0, -0.4, 0.2), |w3|^2 = 0.2.
#   step 3: largest residual is w1 (3.2). Round 1 = [0, 4, 1].
#   round 2 on the original rows of {2, 3}: |w2| = 2.236 > |w3| = 1, so [2, 3].
# Order [0, 4, 1, 2, 3]: keeping 3 keeps {0, 1, 4}; magnitude (largest norms) would keep {0, 2, 4}.
HAND_KEEP_3, HAND_KEEP_4, HAND_MAGNITUDE_3 = [0, 1, 4], [0, 1, 2, 4], [0, 2, 4]


def hand_context() -> Context:
    return Context(make_task(IMAGE_INFO), None, None, torch.device("cpu"), seed=0)


def assert_kept(model: HandMLP, kept: list[int]) -> None:
    """The pruned layers hold exactly the kept neurons' fc1 rows and bias entries and fc2 columns."""
    assert torch.equal(model.fc1.weight, HAND_FC1[kept])
    assert torch.equal(model.fc1.bias, HAND_FC1_BIAS[kept])
    assert torch.equal(model.fc2.weight, HAND_FC2[:, kept])
    assert torch.equal(model.fc2.bias, torch.tensor([0.5, -0.5, 0.25]))


@pytest.mark.parametrize("ratio,kept", [(0.6, HAND_KEEP_3), (0.8, HAND_KEEP_4)])
def test_dgmr_keeps_the_hand_derived_neurons(ratio, kept):
    assert_kept(STAGES.get("dgmr")(HandMLP(), hand_context(), ratio=ratio), kept)


def test_magnitude_keeps_the_largest_rows_of_the_hand_matrix():
    assert_kept(STAGES.get("mlp_magnitude")(HandMLP(), hand_context(), ratio=0.4), HAND_MAGNITUDE_3)


def test_paper_mlp_ratio_counts_against_the_width():
    # width N = 3: the paper's MLP ratio 1 keeps int(3 * 1) = 3 neurons, 2/3 keeps int(2.0) = 2 (order [0, 4]).
    assert_kept(STAGES.get("dgmr_mlp")(HandMLP(), hand_context(), mlp_ratio=1.0), HAND_KEEP_3)
    assert_kept(STAGES.get("dgmr_mlp")(HandMLP(), hand_context(), mlp_ratio=2 / 3), [0, 4])
    with pytest.raises(ConfigError, match="keeps 6 of the 5"):
        STAGES.get("dgmr_mlp")(HandMLP(), hand_context(), mlp_ratio=2.0)


def test_paper_mlp_ratio_on_a_vit_with_expansion_4_is_a_quarter_of_the_hidden_neurons(tiny_vit):
    pruned = STAGES.get("dgmr_mlp")(tiny_vit, hand_context(), mlp_ratio=1.0)
    assert [m.hidden for m in find_mlps(pruned)] == [32, 32]  # width 32, hidden 128 -> 32


def test_dgmr_kd_moves_the_student_towards_the_teacher_without_labels(tiny_vit):
    from methods.dgmr import outputs_and_features

    ctx = image_context()
    teacher = __import__("copy").deepcopy(tiny_vit).eval()
    ctx._teacher = teacher
    student = STAGES.get("dgmr")(tiny_vit, ctx, ratio=0.25)
    batch = ctx.task.to_device(next(iter(ctx.task.loader(ctx.train_set, 32))), ctx.device)

    def gap():
        with torch.no_grad():
            s = outputs_and_features(student.eval(), batch, patch_tokens=False)
            t = outputs_and_features(teacher, batch, patch_tokens=False)
        return float(torch.nn.functional.mse_loss(s[1], t[1]))

    before = gap()
    ctx.train_set.labels.fill_(-100)  # labels are never read: cross-entropy on -100 everywhere would be NaN
    STAGES.get("dgmr_kd")(student, ctx, recipe="project", epochs=20, lr=3e-3, warmup=0.1, weight_decay=0.0,
                          batch_size=8, fraction=0.5, output_weight=1.0, feature_weight=1.0)
    assert gap() < 0.5 * before


def test_released_recipe_scales_lr_by_batch_over_256_and_uses_betas_0_9_0_95(tiny_vit):
    from methods.dgmr import outputs_and_features
    from slimbench.train import make_optimizer

    ctx = image_context()
    released = kd_recipe(ctx, "released", 10, 6e-5, 0.2, 0.04, 512)
    assert released["lr"] == pytest.approx(1.2e-4) and released["betas"] == (0.9, 0.95)  # 6e-5 * 512 / 256
    assert kd_recipe(ctx, "project", 10, 6e-5, 0.2, 0.04, None)["lr"] == 6e-5
    assert "betas" not in kd_recipe(ctx, "project", 10, 6e-5, 0.2, 0.04, None)
    assert make_optimizer(tiny_vit, released).param_groups[0]["betas"] == (0.9, 0.95)
    batch = (vit_input(), None)
    # 8x8 images, 4x4 patches: 4 patch tokens after the class token; the project recipe keeps all 5.
    assert outputs_and_features(tiny_vit, batch)[1].shape == (3, 4, 32)
    assert outputs_and_features(tiny_vit, batch, patch_tokens=False)[1].shape == (3, 5, 32)


def test_taylor_keeps_the_neurons_with_the_largest_norm_over_batches_of_weight_times_gradient(tiny_vit):
    # Independent route: for fc2 (y = W h + b), sum over examples and tokens of h_j * dL/dh_j equals
    # sum_i W[i, j] * dL/dW[i, j], so parameter gradients give each batch's row without any hook.
    ctx = image_context()
    rows = {0: [], 1: []}
    for batch in ctx.calibration_batches(16, 8):
        batch = ctx.task.to_device(batch, ctx.device)
        weights = [m.owner.fc2.weight for m in find_mlps(tiny_vit)]
        grads = torch.autograd.grad(ctx.task.loss(ctx.task.logits(tiny_vit, batch), batch), weights)
        for k, (w, g) in enumerate(zip(weights, grads)):
            rows[k].append((w.detach().double() * g.double()).sum(0) / (8 * 5))  # batch mean over 8 x 5 tokens
    expected = [sorted(torch.stack(rows[k]).norm(dim=0).topk(96).indices.tolist()) for k in (0, 1)]
    fc1 = [m.owner.fc1.weight.detach().clone() for m in find_mlps(tiny_vit)]
    pruned = STAGES.get("mlp_taylor")(tiny_vit, ctx, ratio=0.25, num_examples=16, batch_size=8)
    for k, mlp in enumerate(find_mlps(pruned)):
        assert torch.equal(mlp.owner.fc1.weight, fc1[k][expected[k]])


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
