"""Chains, stage parameters and registries: parsing round-trips and clear errors."""

import pytest

from slimbench.config import load_plugins
from slimbench.errors import ConfigError
from slimbench.registry import Registry
from slimbench.stages import STAGES, StageCall, chain_prefixes, format_chain, parse_chain, resolve_chain

load_plugins()


@pytest.mark.parametrize("chain", ["base", "base+kd", "base+mlp_magnitude-0.5+kd+int8", "base+int8-weight_only"])
def test_chain_round_trips(chain):
    assert format_chain(parse_chain(chain)) == chain


def test_chain_tokens_and_prefixes():
    assert parse_chain("base+mlp_magnitude-0.5+kd") == [StageCall("mlp_magnitude", "0.5"), StageCall("kd")]
    assert chain_prefixes("base+a-1+b") == ["base", "base+a-1", "base+a-1+b"]


@pytest.mark.parametrize("bad", ["kd", "base+", "base+mlp_magnitude-", "base+a/b"])
def test_malformed_chain_is_rejected(bad):
    with pytest.raises(ConfigError):
        parse_chain(bad)


def test_unknown_stage_names_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown stage 'mlp_magnitud'.*Did you mean 'mlp_magnitude'"):
        resolve_chain("base+mlp_magnitud-0.5", {})


@pytest.mark.parametrize("value", ["1.5", "-0.1", "1.0"])
def test_out_of_range_budget_is_rejected(value):
    with pytest.raises(ConfigError, match=r"ratio=.* is out of range \[0\.0, 1\.0\)"):
        resolve_chain(f"base+mlp_magnitude-{value}", {})


def test_non_numeric_value_and_unknown_setting():
    with pytest.raises(ConfigError, match="must be float"):
        resolve_chain("base+mlp_magnitude-half", {})
    with pytest.raises(ConfigError, match="has no parameter 'epoch'"):
        resolve_chain("base+kd", {"kd": {"epoch": 2}})
    with pytest.raises(ConfigError, match="not one of"):
        resolve_chain("base+int8-int4", {})


def test_settings_and_chain_value_are_typed():
    (stage, params), = resolve_chain("base+kd", {"kd": {"epochs": "3", "temperature": 2}})
    assert stage is STAGES.get("kd") and params["epochs"] == 3 and params["temperature"] == 2.0


def test_registry_rejects_duplicates_and_suggests():
    registry = Registry("thing")
    registry.add("alpha", 1)
    with pytest.raises(ValueError):
        registry.add("alpha", 2)
    with pytest.raises(ConfigError, match="Did you mean 'alpha'"):
        registry.get("alpah")
