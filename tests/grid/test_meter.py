"""Pricing in integer micro-units and config validation."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from aigrid.config import ConfigError, DeploymentConfig, load_config
from aigrid.grid.backends.base import Usage
from aigrid.grid.meter import cost_micro, worst_cost_micro


def _dep(**prices: str) -> DeploymentConfig:
    return DeploymentConfig(
        backend="openai",
        base_url="http://x.invalid/v1",
        upstream_model="m",
        **{k: Decimal(v) for k, v in prices.items()},  # type: ignore[arg-type]
    )


def test_cost_is_exact_integer_micro_units() -> None:
    dep = _dep(input_price_per_mtok="0.8", output_price_per_mtok="2.0")
    assert cost_micro(dep, Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000)) == 2_800_000
    assert cost_micro(dep, Usage(prompt_tokens=3, completion_tokens=1)) == 4  # 2.4 + 2 = 4.4, rounded


def test_cached_tokens_use_the_cached_price() -> None:
    dep = _dep(input_price_per_mtok="1", cached_input_price_per_mtok="0.1", output_price_per_mtok="0")
    assert cost_micro(dep, Usage(prompt_tokens=1000, cached_tokens=800)) == 200 + 80


def test_worst_cost_takes_the_dearest_deployment() -> None:
    cheap, dear = _dep(input_price_per_mtok="1"), _dep(input_price_per_mtok="3", output_price_per_mtok="5")
    assert worst_cost_micro([cheap, dear], prompt_tokens=10, output_tokens=2) == 40


def test_no_config_serves_the_embedded_model() -> None:
    config = load_config(None)
    assert [m.name for m in config.models] == ["smollm2-135m"]
    assert config.models[0].aliases == ["local"]
    assert config.models[0].deployments[0].tier == "edge"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[[models]\n", "not valid TOML"),
        ('[[models]]\nname = "x"\n', "deployments"),
        ('[[models]]\nname = "x"\n[[models.deployments]]\nbackend = "openai"\n', "base_url"),
        (
            '[[models]]\nname = "x"\npolicy = "random"\n[[models.deployments]]\nbackend = "embedded"\n',
            "policy",
        ),
        ('[[models]]\nname = "x"\n[[models.deployments]]\nbackend = "embedded"\ncolour = 1\n', "colour"),
        ('[[models]]\nname = "x"\n[[models.deployments]]\nbackend = "embedded"\nparallel = 0\n', "parallel"),
        (
            '[[models]]\nname = "x"\n[[models.deployments]]\nbackend = "embedded"\ncache_sequences = -1\n',
            "cache_sequences",
        ),
        (
            '[[models]]\nname = "x"\n[[models.deployments]]\nbackend = "embedded"\n'
            '[[models]]\nname = "x"\n[[models.deployments]]\nbackend = "embedded"\n',
            "declared twice",
        ),
        ('[learn]\nschedule = "every night"\n', "not a cron expression"),
        ("[learn]\nmin_new_traces = 0\n", "min_new_traces"),
        (
            '[[models]]\nname = "x"\n[[models.deployments]]\nbackend = "openai"\nbase_url = "http://h/v1"\n'
            'upstream_model = "m"\nadapter_path = "a.gguf"\n',
            "adapter_path is for an 'embedded' deployment",
        ),
    ],
)
def test_bad_configs_say_what_is_wrong(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "absent.toml")


def test_prices_with_more_than_six_decimals_or_below_zero_are_refused() -> None:
    with pytest.raises(ValueError, match="6 decimal places"):
        _dep(input_price_per_mtok="0.0000001")
    with pytest.raises(ValueError, match="negative"):
        _dep(output_price_per_mtok="-1")
