"""What a config will cost before it runs: training steps and examples, from the recipes and dataset sizes.

The dry run prints it and validation refuses a config over the ceilings in its ``limits`` block (raised in the
config when a run really is that large), so ``epochs: 1e9`` fails at once instead of training for ever.
Dataset sizes are the subset sizes where the config sets them, else each dataset's published training size
(an upper bound: held-out splits and subsets only shrink it); datasets of unknown size count as unknown.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from slimbench.errors import ConfigError
from slimbench.stages import chain_prefixes, resolve_chain

# Published training-set sizes: MNIST/Fashion-MNIST (LeCun; Xiao 2017), CIFAR-10, Tiny-ImageNet, ImageNet-1k,
# GLUE (Wang et al. 2019, Table 1); for a held-out split of one official split, that split's size.
TRAIN_SIZES = {("mnist", "official"): 60000, ("mnist", "test-split"): 10000,
               ("fashion_mnist", "official"): 60000, ("fashion_mnist", "test-split"): 10000,
               ("cifar10", "official"): 50000, ("cifar10", "train-split"): 50000,
               ("tiny_imagenet", "official"): 100000, ("tiny_imagenet", "train-split"): 100000,
               ("imagenet", "official"): 1281167,
               ("glue", "sst2"): 67349, ("glue", "cola"): 8551, ("glue", "rte"): 2490, ("glue", "mrpc"): 3668,
               ("glue", "qnli"): 104743, ("glue", "qqp"): 363846, ("glue", "mnli"): 392702,
               ("wikitext2", "train"): 20000, ("wikitext2", "valid"): 2100, ("wikitext2", "test"): 2400,
               ("camvid", "train"): 367, ("camvid", "train+val"): 468}


@dataclass
class Estimate:
    """Totals over a config's distinct trainings (base models and training stages, each counted once)."""

    trainings: int = 0
    steps: int = 0
    examples: int = 0
    unknown: set[str] = field(default_factory=set)
    largest: tuple[int, str] = (0, "")

    def text(self) -> str:
        unknown = f"; {len(self.unknown)} dataset(s) of unknown size not counted: {', '.join(sorted(self.unknown))}" \
            if self.unknown else ""
        return (f"estimated cost: {self.trainings} training(s), at most {self.steps:,} optimizer steps on "
                f"{self.examples:,} examples (largest: {self.largest[0]:,} steps, {self.largest[1]}){unknown}")


def train_size(spec: dict[str, Any]) -> Optional[int]:
    """The most training examples a dataset spec can give, or None when unknown."""
    loader = spec["loader"]
    variant = spec.get("task") if loader == "glue" else spec.get("train_split") if loader in ("wikitext2", "camvid") \
        else spec.get("split", "official")
    size = TRAIN_SIZES.get((loader, variant or ("sst2" if loader == "glue" else "train")))
    if loader == "imagenet" and spec.get("train_per_class"):
        size = 1000 * spec["train_per_class"]
    if spec.get("train_size"):
        size = min(size, spec["train_size"]) if size else spec["train_size"]
    return size


def training_steps(recipe: dict[str, Any], examples: int) -> int:
    """Optimizer steps of one training, as slimbench.train.fit counts them."""
    steps = math.ceil(examples / recipe.get("batch_size", 64)) * recipe.get("epochs", 1)
    return min(steps, recipe["max_steps"]) if recipe.get("max_steps") else steps


def stage_recipe(params: dict[str, Any], recipe: dict[str, Any]) -> Optional[dict[str, Any]]:
    """The recipe of a training stage (one with an ``epochs`` parameter), or None for a stage that does not train.
    A stage's ``fraction`` is the share of the training set it trains on (dgmr_kd's unlabeled subset)."""
    if "epochs" not in params:
        return None
    out = dict(recipe)
    for key in ("epochs", "batch_size", "max_steps", "fraction"):
        if params.get(key) is not None:
            out[key] = params[key]
    return out


def add_training(total: Estimate, limits: dict[str, Any], where: str, used: dict[str, Any], examples: int,
                 count: int) -> None:
    """Count ``count`` trainings (one per seed) of recipe ``used`` on ``examples``, refusing one over the limits."""
    if used.get("epochs", 1) > limits["max_epochs"]:
        raise ConfigError(f"{where}: epochs={used['epochs']} is above limits.max_epochs={limits['max_epochs']}. "
                          f"Fix: lower it, or raise 'limits: {{max_epochs: ...}}' in the config if it is intended.")
    examples = max(1, round(examples * used.get("fraction", 1.0)))
    steps = training_steps(used, examples)
    if steps > limits["max_steps_per_training"]:
        raise ConfigError(f"{where}: about {steps:,} optimizer steps per training, above "
                          f"limits.max_steps_per_training={limits['max_steps_per_training']:,}. Fix: "
                          f"lower epochs or set max_steps, or raise the limit in the config.")
    total.trainings += count
    total.steps += steps * count
    total.examples += min(steps * used.get("batch_size", 64), examples * used.get("epochs", 1)) * count
    total.largest = max(total.largest, (steps, where))


def estimate(config: dict[str, Any], only: Optional[str] = None,
             left_out: Callable[[str, str, str, str], bool] = lambda *_: False) -> Estimate:
    """The cost of every study (or of study ``only``), checked against the config's ``limits``; ``left_out(study,
    dataset, model, chain)`` names the experiments a study skips (``skip_inapplicable``), which cost nothing."""
    limits, total = config["limits"], Estimate()
    for name, study in config["studies"].items():
        if only is not None and name != only:
            continue
        for entry in study["grid"]:
            recipe = {**study["base"], **entry.get("base", {})}
            settings = {**study["stages"], **entry.get("stages", {})}
            for dataset in entry["datasets"]:
                examples = train_size(config["datasets"][dataset])
                if examples is None:
                    total.unknown.add(dataset)
                    continue
                for model in entry["models"]:
                    chains = [c for c in study["chains"] if not left_out(name, dataset, model, c)]
                    trainings = [("base", recipe)]
                    for prefix in dict.fromkeys(p for chain in chains for p in chain_prefixes(chain)[1:]):
                        found = stage_recipe(resolve_chain(prefix, settings)[-1][1], recipe)
                        if found is not None:
                            trainings.append((prefix, found))
                    for chain, used in trainings:
                        add_training(total, limits, f"study '{name}', {dataset}, {chain}", used, examples,
                                     len(study["seeds"]))
    if total.steps > limits["max_total_steps"]:
        raise ConfigError(f"config '{config['name']}': about {total.steps:,} optimizer steps in all, above "
                          f"limits.max_total_steps={limits['max_total_steps']:,}. Fix: shrink the studies, or raise "
                          f"the limit in the config if it is intended.")
    return total
