"""Stages, chains and the context a stage runs in.

A *stage* is one compression step ``(model, ctx, **params) -> model`` registered by name with typed,
range-checked parameters. A *chain* is the ordered list of stages written as a path-safe string,
``base+kd+mlp_magnitude-0.5+int8``: tokens joined by ``+``; a token is ``name`` or ``name-value`` where
value sets the stage's primary parameter. Every other parameter comes from the study's ``stages:`` block.
Chains that share a prefix share its saved model, so each distinct prefix is computed once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional

import torch
import yaml
from torch import nn

from slimbench.architectures import STRUCTURES
from slimbench.errors import ConfigError
from slimbench.registry import Registry

BASE = "base"
TOKEN_SEP = "+"
VALUE_SEP = "-"


@dataclass(frozen=True)
class Param:
    """A typed stage parameter; ``low``/``high`` bound it, ``*_open`` makes the bound exclusive."""

    name: str
    type: type = float
    default: Any = None
    low: Optional[float] = None
    high: Optional[float] = None
    low_open: bool = False
    high_open: bool = False
    choices: Optional[tuple] = None
    help: str = ""
    model: bool = False  # names a model: an alias of the config's models or an inline spec (see resolve_models)

    def coerce(self, stage: str, value: Any) -> Any:
        try:
            if self.type is bool and isinstance(value, str):
                if value.lower() not in ("true", "false", "1", "0"):
                    raise ValueError(value)
                value = value.lower() in ("true", "1")
            else:
                value = self.type(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"stage '{stage}': parameter '{self.name}' must be {self.type.__name__}, got {value!r}."
            ) from None
        if self.choices is not None and value not in self.choices:
            raise ConfigError(f"stage '{stage}': {self.name}={value!r} is not one of {list(self.choices)}.")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if isinstance(value, float) and not math.isfinite(value):
                raise ConfigError(f"stage '{stage}': {self.name} must be finite, got {value}.")
            too_low = self.low is not None and (value <= self.low if self.low_open else value < self.low)
            too_high = self.high is not None and (value >= self.high if self.high_open else value > self.high)
            if too_low or too_high:
                raise ConfigError(
                    f"stage '{stage}': {self.name}={value} is out of range {self.range_text()}. "
                    f"Fix: choose a value in that range in the chain or the study's 'stages' block."
                )
        return value

    def range_text(self) -> str:
        lo = "-inf" if self.low is None else self.low
        hi = "inf" if self.high is None else self.high
        return f"{'(' if self.low_open else '['}{lo}, {hi}{')' if self.high_open else ']'}"


StageFn = Callable[..., nn.Module]
RebuildFn = Callable[..., nn.Module]
BudgetFn = Callable[[float], float]


@dataclass(frozen=True)
class AppliesTo:
    """What a stage can compress, declared at registration so that a study can tell before any run which
    (dataset, model, chain) make sense: the model structures it needs (names of
    :data:`slimbench.architectures.STRUCTURES`, e.g. ``mlp_neurons``) and the tasks it works for (None: any)."""

    needs: frozenset[str] = frozenset()
    tasks: Optional[frozenset[str]] = None

    def reason(self, stage: str, structures: Optional[frozenset[str]], task: str, model: str) -> Optional[str]:
        """Why ``stage`` does not apply to ``model`` (its structures, None when unknown) on ``task``; None if it does."""
        if self.tasks is not None and task not in self.tasks:
            return f"'{stage}' works for {', '.join(sorted(self.tasks))}, not {task}"
        if not self.needs:
            return None
        if structures is None:
            return (f"'{stage}' needs {', '.join(sorted(self.needs))}, and the structures of model '{model}' are "
                    f"unknown (add its architecture to slimbench/architectures.py)")
        missing = sorted(self.needs - structures)
        named = "; ".join(f"{name} ({STRUCTURES[name]})" for name in missing)
        return f"'{stage}' needs {named}, which model '{model}' lacks" if missing else None


ANY = AppliesTo()


def applies_to(*needs: str, tasks: Optional[tuple[str, ...]] = None) -> AppliesTo:
    """``applies_to("mlp_neurons")``: the declaration a stage passes to :func:`stage`."""
    unknown = sorted(set(needs) - set(STRUCTURES))
    if unknown:
        raise ValueError(f"applies_to: unknown structure(s) {unknown}; known: {sorted(STRUCTURES)}.")
    return AppliesTo(frozenset(needs), None if tasks is None else frozenset(tasks))


def removes_value(value: float) -> float:
    """Budget of a stage whose primary value is already the share of its prunable FLOPs removed."""
    return value


def keeps_value(value: float) -> float:
    """Budget of a stage whose primary value is the share of its prunable units KEPT (e.g. ``dgmr-0.7``)."""
    return 1.0 - value


@dataclass(frozen=True)
class Stage:
    """A registered compression step.

    ``rebuild`` replays structural changes that the saved tensor shapes alone cannot express (new exit
    heads, fake-quant wrappers) on a freshly built model before weights are loaded; ``finalize`` runs after
    loading (e.g. re-packing int8 kernels). Pruning needs neither: shapes are restored from the checkpoint.
    ``applies_to`` says which models and tasks the stage can compress (default: any). ``budget`` maps the
    primary value to the share of the stage's prunable FLOPs it removes (the crossbench's comparable budget;
    None where the value is not such a share, e.g. a bit width). ``revision`` counts fixes that change what the
    stage computes: above 1 it joins the step's tracked settings and the saved model's record of the step
    (:meth:`applied`), so the workflow and ``slimbench run`` rebuild the steps a fix changed (and what depends on
    them) where a code change alone would not.
    """

    name: str
    fn: StageFn
    params: tuple[Param, ...] = ()
    primary: Optional[str] = None
    rebuild: Optional[RebuildFn] = None
    finalize: Optional[RebuildFn] = None
    description: str = ""
    applies_to: AppliesTo = ANY
    budget: Optional[BudgetFn] = None
    revision: int = 1

    def applied(self, params: dict[str, Any]) -> dict[str, Any]:
        """What a saved model records of this step (``arch.json`` and the metrics' ``stages``): the stage's name, its
        parameters and, for a stage fixed since, its revision."""
        return {"name": self.name, "params": params, **({"revision": self.revision} if self.revision > 1 else {})}

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.params) or "(none)"
        raise ConfigError(f"stage '{self.name}' has no parameter '{name}'. Known: {known}.")

    def resolve(self, value: Optional[str], settings: Optional[dict] = None) -> dict[str, Any]:
        """Defaults, then the study's settings, then the chain token's value; all validated."""
        settings = dict(settings or {})
        if value is not None:
            if self.primary is None:
                raise ConfigError(f"stage '{self.name}' takes no value in the chain, got '{self.name}-{value}'.")
            settings[self.primary] = value
        for key in settings:
            self.param(key)
        resolved = {}
        for p in self.params:
            raw = settings.get(p.name, p.default)
            resolved[p.name] = None if raw is None else p.coerce(self.name, raw)
        return resolved

    def resolve_models(self, params: dict[str, Any], models: dict[str, dict]) -> dict[str, Any]:
        """Model parameters (``Param.model``) as the specs they name in the config's ``models``: the stage and
        its ``rebuild`` hook both get the spec, and the saved model records it, so it reloads without the config
        (and an alias that only one config defines works like a catalog one)."""
        return {key: model_spec(value, models, f"stage '{self.name}': {key}")
                if value is not None and self.param(key).model else value for key, value in params.items()}

    def __call__(self, model: nn.Module, ctx: "Context", **params: Any) -> nn.Module:
        return self.fn(model, ctx, **params)


STAGES: Registry[Stage] = Registry("stage")
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser where built: the same values, 5x faster


def model_spec(ref: Any, models: dict[str, dict], where: str) -> dict[str, Any]:
    """A model alias of ``models``, or an inline spec (a mapping, or its YAML/repr text, with a ``family``)."""
    parsed = yaml.load(ref, Loader=YAML_LOADER) if isinstance(ref, str) else ref
    if isinstance(parsed, dict):
        if "family" not in parsed:
            raise ConfigError(f"{where}: inline model spec {ref!r} needs a 'family'.")
        return dict(parsed)
    if ref not in models:
        raise ConfigError(f"{where}: '{ref}' is not a model of the config. Known: {', '.join(sorted(models))}. "
                          f"Fix: add it under 'models:' in the config or config/catalog.yaml.")
    return dict(models[ref])


def stage(
    name: str,
    params: tuple[Param, ...] = (),
    primary: Optional[str] = None,
    rebuild: Optional[RebuildFn] = None,
    finalize: Optional[RebuildFn] = None,
    applies_to: AppliesTo = ANY,
    budget: Optional[BudgetFn] = None,
    revision: int = 1,
) -> Callable[[StageFn], StageFn]:
    """Register ``fn(model, ctx, **params) -> model`` as a stage; the docstring becomes its description."""
    if budget is not None and primary is None:
        raise ValueError(f"stage '{name}': a budget maps the primary value, so it needs a primary parameter.")
    if not isinstance(revision, int) or revision < 1:
        raise ValueError(f"stage '{name}': revision must be a whole number >= 1, not {revision!r}.")

    def decorator(fn: StageFn) -> StageFn:
        STAGES.add(
            name,
            Stage(name, fn, tuple(params), primary, rebuild, finalize, (fn.__doc__ or "").strip(), applies_to,
                  budget, revision),
        )
        return fn

    return decorator


def fixed_since(applied: dict[str, Any]) -> bool:
    """Whether a saved step (its record, :meth:`Stage.applied`) ran an earlier revision of its stage than the one
    registered now: a fix has changed what it computes since."""
    return applied.get("revision", 1) < STAGES.get(applied["name"]).revision


@dataclass(frozen=True)
class StageCall:
    """One token of a chain: a stage name and the optional primary value as written."""

    name: str
    value: Optional[str] = None

    def __str__(self) -> str:
        return self.name if self.value is None else f"{self.name}{VALUE_SEP}{self.value}"


def parse_chain(chain: str) -> list[StageCall]:
    """``base+kd+mlp_magnitude-0.5`` -> [kd, mlp_magnitude(0.5)]; the leading ``base`` is implicit."""
    tokens = chain.split(TOKEN_SEP)
    if not tokens or tokens[0] != BASE:
        raise ConfigError(f"chain '{chain}' must start with '{BASE}' (e.g. 'base+kd+int8').")
    calls = []
    for token in tokens[1:]:
        name, _, value = token.partition(VALUE_SEP)
        if not name or (VALUE_SEP in token and not value) or "/" in token:
            raise ConfigError(f"chain '{chain}': malformed token '{token}' (write 'name' or 'name-value').")
        calls.append(StageCall(name, value or None))
    return calls


def format_chain(calls: list[StageCall]) -> str:
    return TOKEN_SEP.join([BASE, *map(str, calls)])


def chain_prefixes(chain: str) -> list[str]:
    """Every chain this one builds on, shortest first, itself last: base, base+a, base+a+b."""
    calls = parse_chain(chain)
    return [format_chain(calls[:i]) for i in range(len(calls) + 1)]


def resolve_chain(chain: str, settings: dict[str, dict]) -> list[tuple[Stage, dict[str, Any]]]:
    """Look up and validate every stage of a chain (unknown names and bad values fail here)."""
    return [(STAGES.get(c.name), STAGES.get(c.name).resolve(c.value, settings.get(c.name))) for c in parse_chain(chain)]


@dataclass
class Context:
    """What a stage may use: data, the uncompressed teacher, a training recipe, the device and seed."""

    task: Any
    train_set: Any
    eval_set: Any
    device: torch.device
    seed: int
    recipe: dict = field(default_factory=dict)
    teacher_loader: Optional[Callable[[], nn.Module]] = None
    progress: bool = True
    holdout_set: Any = None  # examples no training saw (the dataset's holdout_fraction), or None
    _teacher: Optional[nn.Module] = None

    @property
    def teacher(self) -> nn.Module:
        if self._teacher is None:
            if self.teacher_loader is None:
                raise RuntimeError("this stage needs a teacher but the context has none")
            self._teacher = self.teacher_loader().to(self.device).eval()
        return self._teacher

    def calibration_batches(self, num_examples: int, batch_size: int = 32) -> Iterator[Any]:
        """Unlabeled calibration examples: the first ``num_examples`` of a seeded shuffle of train."""
        generator = torch.Generator().manual_seed(self.seed)
        order = torch.randperm(len(self.train_set), generator=generator)[:num_examples].tolist()
        subset = self.train_set.subset(order)
        yield from self.task.loader(subset, batch_size, shuffle=False, seed=self.seed)
