"""Reading, validating and expanding a configuration into experiments.

Validation happens here, once, when the config is read (by the Snakefile at DAG-building time and by the
CLI): the JSON schema first, then every name against the registries and every stage value against its
declared range. A bad config therefore fails before any data is decoded or any model trained.

Numbers are read in every YAML spelling (YAML 1.1 reads ``1e-3`` as a string), names are folder names that
cannot leave the results folder, model specs cannot ask for code from a model folder, the same experiment
cannot be listed twice, and the estimated cost must stay under the config's ``limits`` (slimbench.estimate).
"""

from __future__ import annotations

import copy
import importlib
import inspect
import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from slimbench.architectures import structures
from slimbench.checkpoint import remote_code_keys
from slimbench.data import DATASETS, SPEC_KEYS, check_augment
from slimbench.errors import ConfigError, UnsafeInputError
from slimbench.estimate import estimate
from slimbench.models import MODELS
from slimbench.stages import BASE, STAGES, YAML_LOADER, chain_prefixes, parse_chain, resolve_chain
from slimbench.train import check_recipe

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CATALOG = REPO / "config" / "catalog.yaml"
FAMILY_TASKS = {"timm": "image_classification", "cifar_resnet": "image_classification",
                "minimal_transformer": "image_classification",
                "upernet_swin": "semantic_segmentation", "upernet_mobilevit": "semantic_segmentation",
                "hf_classifier": "text_classification", "hf_causal_lm": "language_modeling"}
LOADER_TASKS = {"mnist": "image_classification", "fashion_mnist": "image_classification",
                "cifar10": "image_classification", "tiny_imagenet": "image_classification",
                "imagenet": "image_classification", "glue": "text_classification", "wikitext2": "language_modeling",
                "text_classification": "text_classification", "image_folder": "image_classification",
                "camvid": "semantic_segmentation"}
LOADER_SPLITS = {"mnist": ("official", "test-split"), "fashion_mnist": ("official", "test-split"),
                 "cifar10": ("official", "train-split"), "tiny_imagenet": ("official", "train-split")}
# A study, dataset, model or config name is a folder name below results/: no '/', no leading '.', no '..'.
SAFE_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.]*")
SAFE_CONFIG_NAME = re.compile(r"(?!.*\.\.)[A-Za-z0-9_][A-Za-z0-9_.-]*")
# Number spellings YAML 1.1 leaves as strings: exponents without a dot or without a signed exponent (1e-3, 5E4).
NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def load_plugins(extra: list[str] = ()) -> None:
    """Import methods/baselines (entry points) and any modules the config names; they register stages. A plugin
    package that is absent is skipped (the core runs without it); an import error inside one is raised."""
    for entry in metadata.entry_points(group="slimbench.plugins"):
        try:
            entry.load()
        except ModuleNotFoundError as error:
            if error.name != entry.module:
                raise
            logging.getLogger("slimbench").warning("plugin package '%s' is not importable; its stages are "
                                                   "unavailable.", entry.module)
    for module in extra:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ConfigError(f"plugin '{module}' cannot be imported: {error}") from None


def fill_defaults(instance: Any, schema: dict, root: dict) -> Any:
    """Apply the schema's ``default`` values (jsonschema validates but does not fill them)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].split("/")[-1]]
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key not in instance and "default" in sub:
                instance[key] = json.loads(json.dumps(sub["default"]))
            if key in instance:
                instance[key] = fill_defaults(instance[key], sub, root)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            for key in instance:
                if key not in props:
                    instance[key] = fill_defaults(instance[key], extra, root)
    elif isinstance(instance, list) and isinstance(schema.get("items"), dict):
        return [fill_defaults(item, schema["items"], root) for item in instance]
    return instance


def read_config(path: Path | str) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file '{path}' not found. Configs live in config/ (smoke, default, paper).")
    text = path.read_text()
    return yaml.load(text, Loader=YAML_LOADER) if path.suffix in (".yaml", ".yml") else json.loads(text)


def merge(into: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merged key by key, later values winning (as Snakemake merges --configfile and --config)."""
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            merge(into[key], value)
        else:
            into[key] = value
    return into


def read_configs(paths: list[Path | str], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config files merged in order, then command-line overrides: what Snakemake's ``config`` holds."""
    config: dict[str, Any] = {}
    for path in paths:
        merge(config, read_config(path))
    return merge(config, overrides or {})


@lru_cache(maxsize=8)
def parsed_yaml(path: Path, mtime_ns: int) -> str:
    """A YAML file parsed once per version (the schema and catalog are read for every config), as JSON text."""
    return json.dumps(yaml.load(path.read_text(), Loader=YAML_LOADER))


def yaml_file(path: Path) -> Any:
    """A fresh copy of a parsed YAML file, so callers may change it."""
    return json.loads(parsed_yaml(path, path.stat().st_mtime_ns))


def numbers(value: Any) -> Any:
    """Every mapping value spelled as a number in scientific notation (``1e-3``) read as that number; whole
    values as ints (``epochs: 1e3`` is 1000). List items stay as written: they are names, chains or seeds."""
    if isinstance(value, dict):
        return {k: numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [numbers(v) if isinstance(v, (dict, list)) else v for v in value]
    if isinstance(value, str) and NUMBER.fullmatch(value.strip()):
        number = float(value)
        return int(number) if number.is_integer() and abs(number) < 2**63 else number
    return value


def schema_message(error: jsonschema.ValidationError) -> str:
    """One line: where, what, and for a name the rule it breaks."""
    where = "/".join(map(str, error.absolute_path)) or "(top level)"
    if error.validator == "pattern" and error.schema.get("description"):
        return f"config error at '{where}': {error.instance!r} is not allowed: {' '.join(error.schema['description'].split())}."
    if error.validator == "propertyNames" or (error.validator == "pattern" and not error.absolute_path):
        return f"config error at '{where}': {error.message}"
    return f"config error at '{where}': {' '.join(error.message.split())}"


def validate_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema + registries + ranges; returns the config with defaults and the catalog merged in."""
    schema = yaml_file(SCHEMA)
    if not isinstance(raw, dict):
        raise ConfigError(f"a config is a mapping of settings (name, studies, ...), not {type(raw).__name__}.")
    config = numbers(json.loads(json.dumps(raw, default=str)))
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(config))
    if error is not None:
        raise ConfigError(schema_message(error))
    config = fill_defaults(config, schema, schema)
    check_study_evaluations(config, schema)
    catalog = yaml_file(CATALOG)
    config["datasets"] = {**catalog.get("datasets", {}), **config["datasets"]}
    config["models"] = {**catalog.get("models", {}), **config["models"]}
    check_names(config)
    load_plugins(config["plugins"])
    for study_name, study in config["studies"].items():
        check_study(config, study_name, study)
    estimate(config, left_out=partial(is_left_out, config))  # refuses a config over its limits; plan prints it
    return config


def check_study_evaluations(config: dict[str, Any], schema: dict[str, Any]) -> None:
    """A study's ``evaluation:`` changes only the keys it names: the settings they make, merged with the top-level
    ones, must pass the same schema as the top level (errors point at the study)."""
    validator = jsonschema.Draft202012Validator({**schema["$defs"]["evaluation"], "$defs": schema["$defs"]})
    for name, study in config["studies"].items():
        if study.get("evaluation"):
            error = jsonschema.exceptions.best_match(validator.iter_errors(evaluation_settings(config, name)))
            if error is not None:
                error.path.extendleft(["evaluation", name, "studies"])
                raise ConfigError(schema_message(error))


def evaluation_settings(config: dict[str, Any], study: str) -> dict[str, Any]:
    """How the experiments of ``study`` are evaluated: the top-level settings with the study's changes merged in,
    at the time of reading (an edit of the top level after validation still reaches every study)."""
    return merge(copy.deepcopy(config["evaluation"]), copy.deepcopy(config["studies"][study].get("evaluation", {})))


def measures_model_memory(settings: dict[str, Any]) -> bool:
    """Whether an evaluation with these settings measures the model's own memory: when asked for, or when a device
    budget is set (the budget is judged on it)."""
    return bool(settings["model_memory"] or settings.get("budget"))


def check_names(config: dict[str, Any]) -> None:
    """Names become folders below results/ (and catalog names are not covered by the schema): each must be safe.
    Model specs may not ask for code from a model folder."""
    if not SAFE_CONFIG_NAME.fullmatch(config["name"]):
        raise UnsafeInputError(f"config name {config['name']!r} is not a safe folder name (letters, digits, '_', '.', "
                               f"'-'; no leading '.', no '..').")
    for section in ("datasets", "models", "studies"):
        for name in config[section]:
            if not SAFE_NAME.fullmatch(name):
                raise UnsafeInputError(f"{section[:-1]} name {name!r} is not a safe folder name (letters, digits, '_' "
                                       f"and '.'; no leading '.', no '..'). Fix: rename it.")
    for name, spec in config["models"].items():
        found = remote_code_keys(spec)
        if found:
            raise UnsafeInputError(f"model '{name}': option(s) {sorted(set(found))} would run code from a model folder "
                                   f"or the hub and are never accepted. Fix: remove them (only transformers' built-in "
                                   f"architectures load).")


def check_options(fn: Any, options: dict[str, Any], what: str) -> None:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = set(options) - set(params)
    if unknown:
        raise ConfigError(f"{what}: unknown option(s) {sorted(unknown)}. Known: {sorted(set(params) - {'root', 'download', 'cache', 'info', 'pretrained'})}.")


def catalog_entry(config: dict[str, Any], section: str, name: str, where: str) -> dict[str, Any]:
    """The spec of a dataset or model (``section``), or an error listing the known names and where to add one."""
    spec = config[section].get(name)
    if spec is None:
        raise ConfigError(f"{where}: unknown {section[:-1]} '{name}'. Known: {', '.join(sorted(config[section]))}. "
                          f"Fix: add it under '{section}:' in the config or config/catalog.yaml.")
    return spec


def once(items: list[Any], what: str, where: str) -> None:
    """Refuse a list that names the same thing twice (a duplicate experiment would count as a second seed)."""
    seen: set[Any] = set()
    for item in items:
        key = json.dumps(item, sort_keys=True) if isinstance(item, (dict, list)) else item
        if key in seen:
            raise ConfigError(f"{where}: {what} {item!r} is listed twice. Fix: list it once.")
        seen.add(key)


def pair_task(config: dict[str, Any], dataset: str, model: str) -> str:
    """The task of a (dataset, model) pair: its dataset loader's, else its model family's."""
    loader = config["datasets"][dataset]["loader"]
    return LOADER_TASKS.get(loader) or FAMILY_TASKS.get(config["models"][model]["family"], "unknown")


def chain_skip_reason(spec: dict[str, Any], task: str, model: str, chain: str) -> tuple[str, str] | None:
    """(stage, reason) of the first stage of ``chain`` that does not apply to the model ``spec`` (named ``model``)
    on ``task`` (each stage's ``applies_to``, against :func:`slimbench.architectures.structures`); None if all apply."""
    for call in parse_chain(chain):
        stage = STAGES.get(call.name)
        reason = stage.applies_to.reason(stage.name, structures(spec), task, model)
        if reason is not None:
            return stage.name, reason
    return None


def skip_reason(config: dict[str, Any], dataset: str, model: str, chain: str) -> tuple[str, str] | None:
    """:func:`chain_skip_reason` for a (dataset, model) of the config."""
    return chain_skip_reason(config["models"][model], pair_task(config, dataset, model), model, chain)


def is_left_out(config: dict[str, Any], study: str, dataset: str, model: str, chain: str) -> bool:
    """Whether a study with ``skip_inapplicable`` leaves this experiment out (see :func:`skipped`)."""
    return bool(config["studies"][study].get("skip_inapplicable")) and skip_reason(config, dataset, model,
                                                                                     chain) is not None


def skipped(config: dict[str, Any], study: str) -> list[dict[str, str]]:
    """What a study with ``skip_inapplicable: true`` leaves out of its grid, and why (its ``skipped`` table)."""
    spec = config["studies"][study]
    if not spec.get("skip_inapplicable"):
        return []
    rows = []
    for dataset, model in panels(config, study):
        for chain in spec["chains"]:
            found = skip_reason(config, dataset, model, chain)
            if found is not None:
                rows.append({"dataset": dataset, "model": model, "chain": chain, "stage": found[0],
                             "reason": found[1]})
    return rows


def check_applicable(config: dict[str, Any], name: str, study: dict[str, Any]) -> None:
    """Every chain must apply to every (dataset, model) of the grid, unless the study sets ``skip_inapplicable``;
    then each left-out combination is logged and listed in the skipped table, and a chain that applies nowhere
    is refused (it would run nothing)."""
    where = f"study '{name}'"
    if not study.get("skip_inapplicable"):
        for dataset, model in panels(config, name):
            for chain in study["chains"]:
                found = skip_reason(config, dataset, model, chain)
                if found is not None:
                    raise ConfigError(f"{where}: chain '{chain}' cannot run on model '{model}' with dataset "
                                      f"'{dataset}': {found[1]}. Fix: remove the chain or the model, or set "
                                      f"'skip_inapplicable: true' in the study to leave such combinations out "
                                      f"(each is then listed with its reason in the study's skipped table).")
        return
    if "skipped" not in study["tables"]:
        raise ConfigError(f"{where}: skip_inapplicable needs the 'skipped' table, which lists what is left out and "
                          f"why. Fix: add 'skipped' to the study's tables.")
    left_out = skipped(config, name)
    pairs = len(list(panels(config, name)))
    for chain in study["chains"]:
        if sum(row["chain"] == chain for row in left_out) == pairs:
            reasons = sorted({row["reason"] for row in left_out if row["chain"] == chain})
            raise ConfigError(f"{where}: chain '{chain}' applies to no (dataset, model) of the grid ({'; '.join(reasons)}). "
                              f"Fix: remove it, or add a model it applies to.")
    if left_out:
        logging.getLogger("slimbench").info("%s: %d of %d (dataset, model, chain) left out as inapplicable "
                                            "(skipped table): e.g. %s/%s/%s: %s", where, len(left_out),
                                            pairs * len(study["chains"]), left_out[0]["dataset"],
                                            left_out[0]["model"], left_out[0]["chain"], left_out[0]["reason"])


def check_study(config: dict[str, Any], name: str, study: dict[str, Any]) -> None:
    where = f"study '{name}'"
    once(study["seeds"], "seed", where)
    once(study["chains"], "chain", where)
    panels_seen: set[tuple[str, str]] = set()
    for entry in study["grid"]:
        once(entry["datasets"], "dataset", f"{where}: grid entry")
        once(entry["models"], "model", f"{where}: grid entry")
        for pair in ((d, m) for d in entry["datasets"] for m in entry["models"]):
            if pair in panels_seen:
                raise ConfigError(f"{where}: dataset '{pair[0]}' with model '{pair[1]}' is in two grid entries (only "
                                  f"the first one's settings would apply). Fix: keep it in one entry.")
            panels_seen.add(pair)
    check_recipe(study["base"], f"{where}: base")
    for entry in study["grid"]:
        check_recipe({**study["base"], **entry.get("base", {})}, f"{where}: grid base")
        for dataset in entry["datasets"]:
            spec = catalog_entry(config, "datasets", dataset, where)
            loader = DATASETS.get(spec["loader"])
            options = {k: v for k, v in spec.items() if k not in SPEC_KEYS}
            check_options(loader, options, f"dataset '{dataset}'")
            if "augment" in spec and spec["loader"] in LOADER_TASKS:
                check_augment(dataset, LOADER_TASKS[spec["loader"]])
            splits = LOADER_SPLITS.get(spec["loader"])
            if splits and spec.get("split", "official") not in splits:
                raise ConfigError(f"dataset '{dataset}': split '{spec['split']}' is not one of {list(splits)} "
                                  f"for loader '{spec['loader']}'.")
            for model in entry["models"]:
                mspec = catalog_entry(config, "models", model, where)
                family = MODELS.get(mspec["family"])
                want, have = FAMILY_TASKS.get(family.name), LOADER_TASKS.get(spec["loader"])
                if want and have and want != have:
                    raise ConfigError(f"{where}: model '{model}' ({family.name}) is for {want}, but dataset "
                                      f"'{dataset}' is {have}. Fix: put them in separate grid entries.")
        settings = {**study["stages"], **entry.get("stages", {})}
        resolved = {}
        for chain in study["chains"]:
            resolved_steps = resolve_chain(chain, settings)
            for stage, params in resolved_steps:
                stage.resolve_models(params, config["models"])  # an unknown student alias fails here, before work
            steps = json.dumps([(stage.name, params) for stage, params in resolved_steps],
                               sort_keys=True, default=str)
            if steps in resolved:
                raise ConfigError(f"{where}: chains '{resolved[steps]}' and '{chain}' are the same steps with the "
                                  f"same parameters (they would count as two results). Fix: list one of them.")
            resolved[steps] = chain
    check_applicable(config, name, study)
    from slimbench.claims import BENCHMARK, TESTS
    from slimbench.plots import FIGURES, TABLES

    for figure in study["figures"]:
        FIGURES.get(figure)
    for table in study["tables"]:
        TABLES.get(table)
    if study.get("derive"):
        from slimbench.derive import DERIVERS

        DERIVERS.get(study["derive"])
    for claim in study["claims"]:
        kind = claim["test"]["kind"]
        if kind in BENCHMARK:
            absent = [key for key in ("file", "field", "value") if key not in claim["test"]]
            if absent:
                raise ConfigError(f"study '{name}': claim '{claim['id']}' ({kind}) lacks {', '.join(absent)}.")
            continue
        TESTS.get(kind)
        check_claim(config, name, study, claim)


def check_claim(config: dict[str, Any], name: str, study: dict[str, Any], claim: dict[str, Any]) -> None:
    """A claim must name what its study runs: else it would read 'not run' forever because of a typo."""
    where = f"study '{name}': claim '{claim['id']}'"
    test = claim["test"]
    chain, other = test.get("chain"), test.get("other")
    if isinstance(chain, list) or isinstance(other, list):
        if not (isinstance(chain, list) and isinstance(other, list) and len(chain) == len(other)):
            raise ConfigError(f"{where}: 'chain' and 'other' must both be lists of the same length, or both one chain.")
    named = [c for value in (chain, other) for c in (value if isinstance(value, list) else [value]) if c]
    if test["kind"] == "drop_at_most" and test.get("reference"):
        named.append(test["reference"])
    for chain_name in named:
        resolve_chain(chain_name, study["stages"])
        if chain_name not in study["chains"] and not study.get("derive"):
            raise ConfigError(f"{where}: chain '{chain_name}' is not one of the study's chains. Fix: add it to "
                              f"'chains' or correct the claim.")
    models = {m for entry in study["grid"] for m in entry["models"]}
    datasets = {d for entry in study["grid"] for d in entry["datasets"]}
    wanted = [("dataset", claim.get("dataset"), datasets), ("model", claim.get("model"), models)]
    if test["kind"] == "model_within":
        wanted += [("model", test.get("model"), models), ("model", test.get("reference"), models)]
    for what, value, known in wanted:
        if value is not None and value not in known:
            raise ConfigError(f"{where}: {what} '{value}' is not in the study's grid ({', '.join(sorted(known))}).")
    left_out = {(r["dataset"], r["model"], r["chain"]): r["reason"] for r in skipped(config, name)}
    for dataset, model in panels(config, name):
        if claim.get("dataset", dataset) != dataset or claim.get("model", model) != model:
            continue
        for chain_name in named:
            if (dataset, model, chain_name) in left_out:
                raise ConfigError(f"{where}: chain '{chain_name}' is left out for {dataset}/{model} "
                                  f"({left_out[(dataset, model, chain_name)]}), so the claim could never be judged "
                                  f"there. Fix: restrict the claim with 'model:' (or 'dataset:') to where it runs.")


def tracked_settings(config: dict[str, Any], exp: "Experiment", step: str) -> str:
    """Everything one step of an experiment depends on, as canonical JSON. The workflow passes it as a rule
    parameter, so Snakemake reruns exactly the steps whose settings changed (and what depends on them)."""
    recipe, stages = study_settings(config, exp)
    settings: dict[str, Any] = {"dataset": config["datasets"][exp.dataset], "model": config["models"][exp.model],
                                "task": config["studies"][exp.study]["task"], "download": config["download"]}
    if step == "base":
        settings["recipe"] = recipe
    elif step == "compress":
        stage, params = resolve_chain(exp.chain, stages)[-1]
        settings.update(recipe=recipe, stage=stage.name, params=stage.resolve_models(params, config["models"]))
        if stage.revision > 1:  # a fix that changed the stage's results reruns its steps; revision 1 adds nothing
            settings["revision"] = stage.revision
    else:
        settings["evaluation"] = evaluation_settings(config, exp.study)
    return json.dumps(settings, sort_keys=True, default=str)


def load_config(paths: Path | str | list[Path | str], overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    return validate_config(read_configs(paths if isinstance(paths, list) else [paths], overrides))


@dataclass(frozen=True)
class Experiment:
    """One model to build: (study, dataset, model, seed, chain). Its folder is its identity."""

    config: str
    study: str
    dataset: str
    model: str
    seed: int
    chain: str

    def __post_init__(self) -> None:
        """Every part is a safe folder name, so ``directory`` stays below the results folder whatever the input."""
        names = {"config": (self.config, SAFE_CONFIG_NAME), "study": (self.study, SAFE_NAME),
                 "dataset": (self.dataset, SAFE_NAME), "model": (self.model, SAFE_NAME)}
        for what, (name, pattern) in names.items():
            if not isinstance(name, str) or not pattern.fullmatch(name):
                raise UnsafeInputError(f"experiment {what} {name!r} is not a safe folder name (no '/', no leading "
                                       f"'.', no '..').")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise ConfigError(f"experiment seed must be a whole number >= 0, not {self.seed!r}.")
        if "/" in self.chain or self.chain.startswith(".") or ".." in self.chain.split("+"):
            raise UnsafeInputError(f"chain {self.chain!r} is not a safe folder name.")
        parse_chain(self.chain)

    def directory(self, results_dir: str | Path) -> Path:
        return Path(results_dir) / self.config / self.study / self.dataset / self.model / f"seed{self.seed}" / self.chain

    @property
    def prefix(self) -> "Experiment | None":
        prefixes = chain_prefixes(self.chain)
        return None if len(prefixes) == 1 else Experiment(self.config, self.study, self.dataset, self.model,
                                                          self.seed, prefixes[-2])

    @property
    def base(self) -> "Experiment":
        return Experiment(self.config, self.study, self.dataset, self.model, self.seed, BASE)

    @classmethod
    def from_directory(cls, directory: str | Path) -> "Experiment":
        parts = Path(directory).parts
        if len(parts) < 6 or not parts[-2].startswith("seed"):
            raise ConfigError(f"'{directory}' is not an experiment folder "
                              f"(<results>/<config>/<study>/<dataset>/<model>/seed<k>/<chain>).")
        if not parts[-2][4:].isdigit():
            raise ConfigError(f"'{directory}': '{parts[-2]}' must be seed<k> with a whole number k.")
        if ".." in parts:
            raise UnsafeInputError(f"'{directory}' contains '..'; give the experiment folder without it.")
        return cls(parts[-6], parts[-5], parts[-4], parts[-3], int(parts[-2][4:]), parts[-1])


def panels(config: dict[str, Any], study: str) -> Iterator[tuple[str, str]]:
    """Every (dataset, model) of a study's grid, in config order."""
    for entry in config["studies"][study]["grid"]:
        for dataset in entry["datasets"]:
            for model in entry["models"]:
                yield dataset, model


def experiments(config: dict[str, Any], study: str | None = None) -> Iterator[Experiment]:
    """Every (dataset, model, seed, chain) of a study (or of all studies), in config order; a study with
    ``skip_inapplicable`` leaves out what :func:`skipped` lists. The workflow, ``plan`` and ``study`` all use this."""
    for name, spec in config["studies"].items():
        if study is not None and name != study:
            continue
        left_out = {(row["dataset"], row["model"], row["chain"]) for row in skipped(config, name)}
        for dataset, model in panels(config, name):
            for seed in spec["seeds"]:
                for chain in spec["chains"]:
                    if (dataset, model, chain) not in left_out:
                        yield Experiment(config["name"], name, dataset, model, seed, chain)


def study_settings(config: dict[str, Any], exp: Experiment) -> tuple[dict[str, Any], dict[str, Any]]:
    """The base recipe and stage settings of the grid entry this experiment belongs to."""
    study = config["studies"].get(exp.study)
    if study is None:
        raise ConfigError(f"config '{config['name']}' has no study '{exp.study}'.")
    for entry in study["grid"]:
        if exp.dataset in entry["datasets"] and exp.model in entry["models"]:
            return {**study["base"], **entry.get("base", {})}, {**study["stages"], **entry.get("stages", {})}
    raise ConfigError(f"study '{exp.study}' has no grid entry for dataset '{exp.dataset}' and model '{exp.model}'.")
