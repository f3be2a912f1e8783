"""Reading, validating and expanding a configuration into experiments.

Validation happens here, once, when the config is read (by the Snakefile at DAG-building time and by the
CLI): the JSON schema first, then every name against the registries and every stage value against its
declared range. A bad config therefore fails before any data is decoded or any model trained.
"""

from __future__ import annotations

import importlib
import inspect
import json
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import yaml

from slimbench.data import DATASETS
from slimbench.errors import ConfigError
from slimbench.models import MODELS
from slimbench.stages import BASE, chain_prefixes, resolve_chain
from slimbench.train import check_recipe

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
CATALOG = REPO / "config" / "catalog.yaml"
FAMILY_TASKS = {"timm": "image_classification", "cifar_resnet": "image_classification",
                "minimal_transformer": "image_classification",
                "hf_classifier": "text_classification", "hf_causal_lm": "language_modeling"}
LOADER_TASKS = {"mnist": "image_classification", "fashion_mnist": "image_classification",
                "cifar10": "image_classification", "tiny_imagenet": "image_classification",
                "imagenet": "image_classification", "glue": "text_classification", "wikitext2": "language_modeling"}


def load_plugins(extra: list[str] = ()) -> None:
    """Import methods/baselines (entry points) and any modules the config names; they register stages."""
    for entry in metadata.entry_points(group="slimbench.plugins"):
        entry.load()
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
    return yaml.safe_load(path.read_text()) if path.suffix in (".yaml", ".yml") else json.loads(path.read_text())


def validate_config(raw: dict[str, Any]) -> dict[str, Any]:
    """Schema + registries + ranges; returns the config with defaults and the catalog merged in."""
    schema = yaml.safe_load(SCHEMA.read_text())
    config = json.loads(json.dumps(raw))
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as error:
        where = "/".join(map(str, error.absolute_path)) or "(top level)"
        raise ConfigError(f"config error at '{where}': {error.message}") from None
    config = fill_defaults(config, schema, schema)
    catalog = yaml.safe_load(CATALOG.read_text())
    config["datasets"] = {**catalog.get("datasets", {}), **config["datasets"]}
    config["models"] = {**catalog.get("models", {}), **config["models"]}
    load_plugins(config["plugins"])
    for study_name, study in config["studies"].items():
        check_study(config, study_name, study)
    return config


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


def check_study(config: dict[str, Any], name: str, study: dict[str, Any]) -> None:
    where = f"study '{name}'"
    check_recipe(study["base"], f"{where}: base")
    for entry in study["grid"]:
        check_recipe({**study["base"], **entry.get("base", {})}, f"{where}: grid base")
        for dataset in entry["datasets"]:
            spec = catalog_entry(config, "datasets", dataset, where)
            loader = DATASETS.get(spec["loader"])
            options = {k: v for k, v in spec.items() if k not in ("loader", "train_size", "eval_size", "subset_seed")}
            check_options(loader, options, f"dataset '{dataset}'")
            for model in entry["models"]:
                mspec = catalog_entry(config, "models", model, where)
                family = MODELS.get(mspec["family"])
                want, have = FAMILY_TASKS.get(family.name), LOADER_TASKS.get(spec["loader"])
                if want and have and want != have:
                    raise ConfigError(f"{where}: model '{model}' ({family.name}) is for {want}, but dataset "
                                      f"'{dataset}' is {have}. Fix: put them in separate grid entries.")
        settings = {**study["stages"], **entry.get("stages", {})}
        for chain in study["chains"]:
            resolve_chain(chain, settings)
    from slimbench.plots import FIGURES

    for figure in study["figures"]:
        FIGURES.get(figure)


def load_config(path: Path | str) -> dict[str, Any]:
    return validate_config(read_config(path))


@dataclass(frozen=True)
class Experiment:
    """One model to build: (study, dataset, model, seed, chain). Its folder is its identity."""

    config: str
    study: str
    dataset: str
    model: str
    seed: int
    chain: str

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
        return cls(parts[-6], parts[-5], parts[-4], parts[-3], int(parts[-2][4:]), parts[-1])


def panels(config: dict[str, Any], study: str) -> Iterator[tuple[str, str]]:
    """Every (dataset, model) of a study's grid, in config order."""
    for entry in config["studies"][study]["grid"]:
        for dataset in entry["datasets"]:
            for model in entry["models"]:
                yield dataset, model


def experiments(config: dict[str, Any], study: str | None = None) -> Iterator[Experiment]:
    """Every (dataset, model, seed, chain) of a study (or of all studies), in config order."""
    for name, spec in config["studies"].items():
        if study is not None and name != study:
            continue
        for dataset, model in panels(config, name):
            for seed in spec["seeds"]:
                for chain in spec["chains"]:
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
