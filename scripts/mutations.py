"""Mutation checks: do the tests fail when the code under test is broken on purpose?

For each entry of MUTATIONS, the working tree's files (tracked, plus untracked ones git does not ignore, so a
tree in the middle of an edit still imports) are copied to a temporary folder; one exact text in one file is
replaced there; the entry's pytest selection runs there with ``python -m pytest -q -x``. The working tree is
never written. A mutation the tests do not notice SURVIVES, and the script exits 1. Each selection first runs
once unmutated: it must pass, otherwise its failing would prove nothing ("baseline fails", also exit 1).

    python scripts/mutations.py                 # every mutation
    python scripts/mutations.py --only NAME     # one (repeatable); --list prints the names

Adding a mutation is one entry in MUTATIONS (name, file, exact old text, new text, pytest arguments).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from worktree import tree_files

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    """Replace ``old`` (must occur exactly once in ``path``) by ``new``; ``tests`` are pytest arguments."""

    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


DGMR_ROWS = "    return torch.cat([lin.weight.detach().double() for lin in mlp.inputs], dim=1)\n"
DGMR_TESTS = ("tests/test_dgmr.py",)
ORDER_QAT_TESTS = ("tests/test_order_known_answers.py", "-k", "qat_computes")
MUTATIONS: list[Mutation] = [
    Mutation("dgmr-orthogonalise-fc2-columns", "methods/dgmr.py", DGMR_ROWS,
             "    return mlp.output.weight.detach().double().T.contiguous()\n", DGMR_TESTS),
    Mutation("dgmr-append-the-bias", "methods/dgmr.py", DGMR_ROWS,
             "    return torch.cat([lin.weight.detach().double() for lin in mlp.inputs]\n"
             "                     + [mlp.inputs[0].bias.detach().double()[:, None]], dim=1)\n", DGMR_TESTS),
    Mutation("dgmr-scale-rows-by-fc2-norms", "methods/dgmr.py", DGMR_ROWS,
             "    return (torch.cat([lin.weight.detach().double() for lin in mlp.inputs], dim=1)\n"
             "            * mlp.output.weight.detach().double().norm(dim=0)[:, None])\n", DGMR_TESTS),
    Mutation("minattn-two-layernorms-in-paper-layout", "methods/minimal_attention.py",
             "self.norm2 = nn.LayerNorm(embed_dim) if norms == 2 else nn.Identity()",
             "self.norm2 = nn.LayerNorm(embed_dim)",
             ("tests/test_minimal_attention.py", "-k", "paper or closed_form")),
    Mutation("stat-ignore-sequential", "methods/stat.py",
             "gram = collect_grams(model, [part], batches, ctx, sketch_rows)[0] if sequential and i else grams[i]",
             "gram = grams[i]", ("tests/test_stat.py", "-k", "sequential_calibration")),
    Mutation("stat-include-padding-rows", "methods/stat.py",
             "return rows if mask is None else rows[mask.reshape(-1).bool()]", "return rows",
             ("tests/test_stat.py", "-k", "padding_positions")),
    Mutation("stat-sketch-without-signs", "methods/stat.py",
             "sign = (torch.randint(0, 2, (len(rows), 1), generator=self.generator) * 2 - 1).to(self.state)",
             "sign = torch.ones(len(rows), 1).to(self.state)", ("tests/test_stat.py", "-k", "lapack")),
    Mutation("stat-sketch-with-1-row-a-batch", "methods/stat.py",
             "bucket = torch.randint(0, self.sketch_rows, (len(rows),), generator=self.generator)",
             "bucket = torch.randint(0, 1, (len(rows),), generator=self.generator)", ("tests/test_stat.py", "-k", "lapack")),
    Mutation("stat-sketch-not-applied", "methods/stat.py", "        if self.sketch_rows:  # signed", "        if False:  # signed",
             ("tests/test_stat.py", "-k", "one_countsketch_per_batch")),
    Mutation("order-qat-does-not-quantize-weights", "methods/order.py",
             "        wq = fake_quant_weight(self.layer.weight, self.weight_bits)\n",
             "        wq = self.layer.weight\n", ORDER_QAT_TESTS),
    Mutation("order-qat-float-activations", "methods/order.py",
             "        xq = fake_quant_act(x, self.act_low, self.act_high, self.act_bits).to(x.dtype)\n",
             "        xq = x\n", ORDER_QAT_TESTS),
    Mutation("order-exit-does-not-freeze-backbone", "methods/order.py",
             "    for p in model.backbone.parameters():\n        p.requires_grad_(False)\n", "",
             ("tests/test_order_known_answers.py", "-k", "backbone_unchanged")),
    Mutation("order-protocol-ignores-seed-agreement", "methods/order_graph.py",
             'if protocol.agreement == "every_seed" and not all(d * win > 0 for d in differences):',
             "if False:", ("tests/test_order_protocol.py", "-k", "every_seed")),
    Mutation("order-protocol-not-read-from-config", "methods/order_graph.py",
             "return decide_order(frame, metric, chains, count, seed, protocol)",
             "return decide_order(frame, metric, chains, count, seed, LEGACY)",
             ("tests/test_order_protocol.py", "-k", "recorded")),
    Mutation("order-exit-threshold-not-chosen", "methods/order_stages.py",
             "    model.threshold = choose_threshold(*held_out_outputs(model, ctx, held), max_drop)\n",
             "    model.threshold = NEVER\n", ("tests/test_order_known_answers.py", "-k", "first_exit")),
]


def copy_tree(target: Path) -> None:
    """The working tree's files that git tracks or would track, copied under ``target`` (nothing else)."""
    for name in tree_files(REPO):
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target / name)


def run_tests(folder: Path, tests: tuple[str, ...]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
           "SLIMBENCH_DATA_ROOT": os.environ.get("SLIMBENCH_DATA_ROOT", str(REPO.parent / "shared" / "data"))}
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *tests],
                          cwd=folder, env=env, capture_output=True, text=True)


def check(mutation: Mutation, scratch: Path, baselines: dict[tuple[str, ...], bool]) -> tuple[str, bool]:
    """(outcome, ok) for one mutation; ``baselines`` caches whether each unmutated selection passes."""
    if mutation.tests not in baselines:
        clean = scratch / f"clean-{len(baselines)}"
        copy_tree(clean)
        baselines[mutation.tests] = run_tests(clean, mutation.tests).returncode == 0
    if not baselines[mutation.tests]:
        return "baseline fails (fix the tree first)", False
    folder = scratch / mutation.name
    copy_tree(folder)
    path = folder / mutation.path
    text = path.read_text()
    if text.count(mutation.old) != 1:
        return f"old text found {text.count(mutation.old)} times (update the entry)", False
    path.write_text(text.replace(mutation.old, mutation.new))
    result = run_tests(folder, mutation.tests)
    failed = result.returncode != 0
    return ("yes" if failed else "NO - SURVIVED"), failed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this mutation")
    parser.add_argument("--list", action="store_true", help="print the mutation names and exit")
    args = parser.parse_args(argv)
    if args.list:
        print("\n".join(m.name for m in MUTATIONS))
        return 0
    unknown = set(args.only) - {m.name for m in MUTATIONS}
    if unknown:
        parser.error(f"unknown mutation(s) {sorted(unknown)}; known: {[m.name for m in MUTATIONS]}")
    chosen = [m for m in MUTATIONS if not args.only or m.name in args.only]
    rows, all_ok, baselines = [], True, {}
    with tempfile.TemporaryDirectory(prefix="mutations-") as scratch:
        for mutation in chosen:
            outcome, ok = check(mutation, Path(scratch), baselines)
            all_ok &= ok
            rows.append((mutation.name, mutation.path, " ".join(mutation.tests), outcome))
            print(f"{mutation.name}: tests failed = {outcome}", file=sys.stderr, flush=True)
    header = ("mutation", "file", "tests", "tests failed (expected: yes)")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(row, widths)) + " |")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
