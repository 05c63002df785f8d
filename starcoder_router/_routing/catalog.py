"""The catalog: StarCoder 2 variants and the deployments that serve them, as validated data.

The default catalog ships as `data/catalog.toml`. Users extend or override it in code
(`catalog.with_deployments(...)`) or from their own TOML file (`Router.from_config`).
"""

from __future__ import annotations

import datetime as dt
import functools
import tomllib
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from .._errors import ConfigError
from .._validation import (
    FrozenModel,
    config_error,
    read_toml,
    validate_config,
    validation_error_of,
)

__all__ = [
    "Capability",
    "Catalog",
    "Deployment",
    "Score",
    "Variant",
    "normalize_benchmark",
]

Capability = Literal["completion", "fim", "chat", "structured_output", "streaming"]
Pricing = Literal["serverless", "provisioned", "local"]
VariantKind = Literal["base", "instruct"]

LOCAL_PROVIDERS = frozenset({"ollama", "vllm", "llamacpp", "tgi", "lmstudio"})

_BENCHMARK_ALIASES = {
    "ds1000": "ds-1000",
    "cruxevali": "cruxeval-i",
    "cruxeval_i": "cruxeval-i",
    "humanevalplus": "humaneval+",
    "mbppplus": "mbpp+",
    "repobench": "repobench-v1.1",
}


def normalize_benchmark(name: str) -> str:
    """Canonical benchmark key: `"HumanEval+"` -> `"humaneval+"`, `"DS1000"` -> `"ds-1000"`."""
    key = name.strip().lower().replace(" ", "").replace("_", "-")
    return _BENCHMARK_ALIASES.get(key.replace("-", ""), _BENCHMARK_ALIASES.get(key, key))



class Score(FrozenModel):
    """A benchmark score with the place it was published."""

    value: float
    source: str


class Variant(FrozenModel):
    """One StarCoder 2 model. Its native window is a model fact; what a server serves may differ."""

    id: str
    hf_repo: str
    kind: VariantKind
    parameters: int = Field(gt=0)
    context_window: int = Field(default=16384, gt=0)
    sliding_window: int = Field(default=4096, gt=0)
    scores: dict[str, Score] = Field(default_factory=dict)
    source: str = ""

    @field_validator("scores", mode="before")
    @classmethod
    def _normalize_scores(cls, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {normalize_benchmark(k): v for k, v in value.items()}
        return value

    def score(self, benchmark: str) -> float | None:
        """The variant's score on `benchmark`, or None when none is known."""
        found = self.scores.get(normalize_benchmark(benchmark))
        return found.value if found else None


class Deployment(FrozenModel):
    """A variant served by a provider, with the window as served, prices and capabilities.

    Example::

        Deployment(provider="ollama", variant="starcoder2-3b", model="starcoder2:3b",
                   context_window=16384, capabilities={"completion", "fim", "streaming"})
    """

    name: str = ""
    provider: str
    variant: str
    model: str
    context_window: int = Field(gt=0)
    input_usd_per_mtok: float = Field(default=0.0, ge=0)
    output_usd_per_mtok: float = Field(default=0.0, ge=0)
    # A hosted deployment's hourly price is charged by the second of each request; a local
    # one's becomes a price per token from its observed throughput (`selfhosted.py`).
    usd_per_hour: float | None = Field(default=None, ge=0)
    pricing: Pricing = "serverless"
    capabilities: frozenset[Capability] = frozenset({"completion", "fim", "streaming"})
    max_output_tokens: int | None = Field(default=None, gt=0)
    # How many stop sequences the server takes, when measured (`starcoder-router doctor`);
    # unset, the provider's documented limit applies.
    max_stop: int | None = Field(default=None, gt=0)
    api: Literal["openai", "native"] | None = None
    # Decode speed and time to first token, when known (`starcoder-router doctor --write`
    # measures both): the latency prior until requests are observed, `tokens_per_second` also
    # the self-hosted price's. Unset, the prior guesses from the model's size and whether the
    # deployment is local.
    tokens_per_second: float | None = Field(default=None, gt=0)
    ttft_s: float | None = Field(default=None, ge=0, allow_inf_nan=False)
    # The first-token deadline for requests that set none (see `CompletionRequest`).
    first_token_timeout_s: float | None = Field(default=None, gt=0, le=600.0,
                                                allow_inf_nan=False)
    base_url: str | None = None
    # Replicas: deployments naming the same group share its sessions by affinity (local
    # servers of one kind serving one variant, model and window from several base URLs form a
    # group without it); `parallel` is how many requests the server runs at once when it does
    # not say (Ollama's OLLAMA_NUM_PARALLEL, vLLM's --max-num-seqs). See `_fleet/`.
    group: str | None = Field(default=None, min_length=1, max_length=200)
    parallel: int | None = Field(default=None, gt=0, le=4096)
    source: str = "configured"
    as_of: dt.date | None = None

    @model_validator(mode="before")
    @classmethod
    def _defaults(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            data = dict(data)
            # Only strings are looked at here: anything else is left for validation to refuse.
            provider, variant = data.get("provider"), data.get("variant")
            if (not data.get("name") and isinstance(provider, str) and provider
                    and isinstance(variant, str) and variant):
                data["name"] = f"{provider}/{variant}"
            if "pricing" not in data and isinstance(provider, str) and provider in LOCAL_PROVIDERS:
                data["pricing"] = "local"
        return data

    @property
    def is_local(self) -> bool:
        """True for deployments that run on the user's own hardware."""
        return self.pricing == "local"

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def first_token_deadline(self, requested: float | None) -> float | None:
        """Seconds this deployment gets to its first output: the request's deadline, else its
        own; None when neither is set, or it cannot stream (the first token is not seen)."""
        seconds = requested or self.first_token_timeout_s
        return seconds if seconds is not None and self.supports("streaming") else None


class Catalog(FrozenModel):
    """Variants and deployments. Immutable: every change returns a new catalog."""

    variants: dict[str, Variant]
    deployments: tuple[Deployment, ...] = ()
    as_of: dt.date | None = None

    @model_validator(mode="after")
    def _check(self) -> Catalog:
        seen: set[str] = set()
        for i, dep in enumerate(self.deployments):
            if dep.name in seen:
                raise ValueError(f"deployments[{i}]: duplicate deployment name {dep.name!r}")
            seen.add(dep.name)
            if dep.variant not in self.variants:
                known = ", ".join(sorted(self.variants))
                raise ValueError(
                    f"deployments[{i}] ({dep.name}): unknown variant {dep.variant!r}; "
                    f"known variants: {known}"
                )
        return self

    @classmethod
    def default(cls) -> Catalog:
        """The packaged catalog (cached; it is immutable)."""
        return _default_catalog()

    @classmethod
    def from_toml(cls, path: str) -> Catalog:
        """Load a complete catalog from a TOML file with `[[variants]]` and `[[deployments]]`."""
        return _catalog_from_data(read_toml(path), source=path)

    def variant(self, variant_id: str) -> Variant:
        try:
            return self.variants[variant_id]
        except KeyError:
            raise ConfigError(f"unknown variant {variant_id!r}") from None

    def deployment(self, name: str) -> Deployment:
        for dep in self.deployments:
            if dep.name == name:
                return dep
        raise ConfigError(f"unknown deployment {name!r}")

    def with_deployments(self, *deployments: Deployment) -> Catalog:
        """A catalog with these deployments added, replacing any with the same name."""
        names = {d.name for d in deployments}
        kept = tuple(d for d in self.deployments if d.name not in names)
        return Catalog(variants=self.variants, deployments=kept + deployments, as_of=self.as_of)

    def without(self, *names: str) -> Catalog:
        """A catalog without the named deployments."""
        return self.model_copy(
            update={"deployments": tuple(d for d in self.deployments if d.name not in names)}
        )

    def with_variants(self, *variants: Variant) -> Catalog:
        merged = dict(self.variants)
        merged.update({v.id: v for v in variants})
        return Catalog(variants=merged, deployments=self.deployments, as_of=self.as_of)

    def merged(self, variants: Iterable[Mapping[str, Any]] = (),
               deployments: Iterable[Mapping[str, Any]] = (), *, source: str) -> Catalog:
        """Apply config-file entries: a deployment whose name exists is updated field by field,
        any other is added whole. Errors name `source` and the offending entry."""
        all_variants = dict(self.variants)
        for i, raw in enumerate(variants):
            var = validate_config(Variant, raw, source=source, prefix=f"variants[{i}]")
            all_variants[var.id] = var
        current = {d.name: d for d in self.deployments}
        order = [d.name for d in self.deployments]
        for i, entry in enumerate(deployments):
            raw = dict(entry)
            name = raw.get("name") or (
                f"{raw['provider']}/{raw['variant']}" if "provider" in raw and "variant" in raw
                else None
            )
            base = current.get(name) if isinstance(name, str) else None
            if base is None and isinstance(raw.get("name"), str) and not (
                    {"provider", "variant", "model"} <= raw.keys()):
                # Only a name: the user meant to change an existing deployment.
                raise ConfigError(
                    f"no deployment named {name!r}; known: {', '.join(order) or 'none'}, or "
                    "give provider/variant/model to add one",
                    source=source, field=f"deployments[{i}].name",
                )
            merged_raw = {**base.model_dump(), **raw} if base else raw
            dep = validate_config(Deployment, merged_raw, source=source, prefix=f"deployments[{i}]")
            if dep.variant not in all_variants:
                known = ", ".join(sorted(all_variants))
                raise ConfigError(f"unknown variant {dep.variant!r}; known variants: {known}",
                                  source=source, field=f"deployments[{i}].variant")
            if dep.name not in current:
                order.append(dep.name)
            current[dep.name] = dep
        try:
            return Catalog.model_validate({
                "variants": all_variants,
                "deployments": tuple(current[n] for n in order),
                "as_of": self.as_of,
            })
        except (ValidationError, ConfigError) as raised:
            exc = validation_error_of(raised)
            if exc is None:
                raise
            raise config_error(exc, source=source) from None


@functools.cache
def _default_catalog() -> Catalog:
    from importlib import resources  # loads tempfile and more: only when the catalog is read

    text = resources.files("starcoder_router").joinpath("data/catalog.toml").read_bytes()
    return _catalog_from_data(
        tomllib.loads(text.decode("utf-8")), source="starcoder_router/data/catalog.toml"
    )


def _catalog_from_data(data: Mapping[str, Any], *, source: str) -> Catalog:
    raw_variants = data.get("variants", [])
    if isinstance(raw_variants, list):
        variants = {v.get("id", f"#{i}"): v for i, v in enumerate(raw_variants)}
    else:
        variants = raw_variants
    return validate_config(
        Catalog,
        {"variants": variants, "deployments": data.get("deployments", []),
         "as_of": data.get("as_of")},
        source=source,
    )
