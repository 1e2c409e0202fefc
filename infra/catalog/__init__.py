"""GPU, tier and model catalogs: YAML data files validated on load.

from infra.catalog import load_catalog
catalog = load_catalog()
catalog.model("r1-distill-qwen-7b").num_key_value_heads   # 4
catalog.tier("pro").machine_for("eks").machine_type        # "p5.48xlarge"
"""

from infra.catalog.loader import CATALOG_DIR, Catalog, load_catalog, read_catalog
from infra.catalog.schema import (
    PLATFORMS,
    QUANTIZATION_NAMES,
    CatalogError,
    Gpu,
    MachineMapping,
    ModelSpec,
    PublishedSize,
    Tier,
    VllmSupport,
)

__all__ = [
    "CATALOG_DIR",
    "PLATFORMS",
    "QUANTIZATION_NAMES",
    "Catalog",
    "CatalogError",
    "Gpu",
    "MachineMapping",
    "ModelSpec",
    "PublishedSize",
    "Tier",
    "VllmSupport",
    "load_catalog",
    "read_catalog",
]
