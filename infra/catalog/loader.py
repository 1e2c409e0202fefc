"""Load and validate the YAML catalogs; errors name the file, the entry and the field."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from infra.catalog.schema import CatalogError, Gpu, ModelSpec, Tier

CATALOG_DIR = Path(__file__).resolve().parent
FILES = {"gpus": "gpus.yaml", "tiers": "tiers.yaml", "models": "models.yaml"}

E = TypeVar("E", bound=BaseModel)


class Catalog(BaseModel):
    """GPUs, tiers and models, cross-checked (each tier's GPU exists, aliases are unique)."""

    model_config = ConfigDict(frozen=True)

    gpus: dict[str, Gpu]
    tiers: dict[str, Tier]
    models: dict[str, ModelSpec]

    def model(self, name_or_alias: str) -> ModelSpec:
        """Find a model by Hugging Face repo id or alias (case-insensitive)."""
        wanted = name_or_alias.strip().lower()
        for spec in self.models.values():
            if wanted == spec.id.lower() or wanted in (a.lower() for a in spec.aliases):
                return spec
        allowed = ", ".join(f"{s.id} ({s.aliases[0]})" for s in self.models.values())
        raise CatalogError(f"unknown model {name_or_alias!r}; allowed: {allowed}")

    def tier(self, name: str) -> Tier:
        tier = self.tiers.get(name.strip().lower())
        if tier is None:
            raise CatalogError(f"unknown tier {name!r}; allowed: {', '.join(self.tiers)}")
        return tier

    def gpu(self, name: str) -> Gpu:
        gpu = self.gpus.get(name)
        if gpu is None:
            raise CatalogError(f"unknown GPU {name!r}; allowed: {', '.join(self.gpus)}")
        return gpu


def _describe(err: ErrorDetails) -> str:
    field = ".".join(str(p) for p in err["loc"]) or "(entry)"
    value = err.get("input")
    shown = "" if isinstance(value, dict) or err["type"] == "missing" else f" (got {value!r})"
    return f"field {field!r}: {err['msg']}{shown}"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _no_duplicate_keys(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _no_duplicate_keys)


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_StrictLoader)  # noqa: S506 (safe loader)
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read catalog file: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise CatalogError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict) or not data:
        raise CatalogError(f"{path}: expected a mapping of entries keyed by name, got {type(data).__name__}")
    return data


def _tiers(path: Path, gpus: dict[str, Gpu]) -> dict[str, Tier]:
    raw = _read(path)
    for key, body in raw.items():
        if isinstance(body, dict) and isinstance(body.get("machines"), dict):
            shapes = [(f"machines.{platform}", mapping) for platform, mapping in body["machines"].items()]
            for platform, listed in (body.get("alternatives") or {}).items():
                shapes += [(f"alternatives.{platform}[{i}]", m) for i, m in enumerate(listed or [])]
            for where, mapping in shapes:
                if isinstance(mapping, dict) and "gpus_per_replica" in mapping:
                    raise CatalogError(
                        f"{path}: entry {key!r}: field '{where}.gpus_per_replica' comes from "
                        "the tier's gpus_per_replica; do not set it"
                    )
                if isinstance(mapping, dict):
                    mapping["gpus_per_replica"] = body.get("gpus_per_replica", 1)
    tiers: dict[str, Tier] = {}
    for key, body in raw.items():
        single = {key: body}
        tiers.update(_validated(path, single, Tier, "key"))
        gpu = tiers[str(key)].gpu
        if gpu not in gpus:
            raise CatalogError(f"{path}: entry {key!r}: field 'gpu': unknown GPU {gpu!r}; allowed: {', '.join(gpus)}")
        for platform, listed in tiers[str(key)].alternatives.items():
            for i, shape in enumerate(listed):
                if shape.gpu is None or shape.gpu not in gpus:
                    raise CatalogError(
                        f"{path}: entry {key!r}: field 'alternatives.{platform}[{i}].gpu': "
                        f"{shape.gpu!r} is not a GPU of the catalog; allowed: {', '.join(gpus)}"
                    )
    return tiers


def _validated(path: Path, raw: dict[str, Any], cls: type[E], key_field: str) -> dict[str, E]:
    out: dict[str, E] = {}
    for key, body in raw.items():
        if not isinstance(body, dict):
            raise CatalogError(f"{path}: entry {key!r}: expected a mapping of fields, got {type(body).__name__}")
        try:
            out[str(key)] = cls.model_validate({**body, key_field: str(key)})
        except ValidationError as exc:
            details = "; ".join(_describe(e) for e in exc.errors())
            raise CatalogError(f"{path}: entry {key!r}: {details}") from None
    return out


def _check_aliases(path: Path, models: dict[str, ModelSpec]) -> None:
    seen: dict[str, str] = {key.lower(): key for key in models}
    for key, spec in models.items():
        for alias in spec.aliases:
            other = seen.get(alias.lower())
            if other is not None and other != key:
                raise CatalogError(f"{path}: entry {key!r}: field 'aliases': {alias!r} is already used by {other!r}")
            seen[alias.lower()] = key


def read_catalog(directory: Path) -> Catalog:
    """Read and validate the three catalog files in `directory` (no caching)."""
    paths = {name: directory / file for name, file in FILES.items()}
    gpus = _read_entries(paths["gpus"], Gpu)
    tiers = _tiers(paths["tiers"], gpus)
    models = _read_entries(paths["models"], ModelSpec, key_field="id")
    _check_aliases(paths["models"], models)
    return Catalog(gpus=gpus, tiers=tiers, models=models)


def _read_entries(path: Path, cls: type[E], key_field: str = "key") -> dict[str, E]:
    raw = _read(path)
    for key, body in raw.items():
        if isinstance(body, dict) and key_field in body:
            raise CatalogError(f"{path}: entry {key!r}: field {key_field!r} is the entry's key; do not set it")
    return _validated(path, raw, cls, key_field)


@functools.cache
def _cached(directory: str) -> Catalog:
    return read_catalog(Path(directory))


def load_catalog(directory: Path | str | None = None) -> Catalog:
    """The catalog from `directory` (default: the files shipped in infra/catalog/), cached per directory."""
    return _cached(str(Path(directory or CATALOG_DIR).resolve()))
