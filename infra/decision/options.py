"""The local options of a tier: a bought server of the tier's shape, and cloud nodes (on-demand, spot)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from infra.decision.cost_model import LocalOption, cloud_unit_cost, onprem_unit_cost

if TYPE_CHECKING:
    from infra.catalog import MachineMapping
    from infra.decision.capacity import TierCapacity
    from infra.decision.prices import LocalPriceSheet, SourcedAmount
    from infra.decision.study import Amount, CostRequest

Convert = Callable[[float, str], float]  # (amount, currency) -> amount in the report currency


def packing(mapping: MachineMapping) -> dict[str, Any]:
    """How a unit (server, cloud node) holds the plan's replicas: whole replicas, or pods of a multi-node one."""
    if mapping.nodes_per_replica == 1:
        return {"replicas_per_node": mapping.replicas_per_node}
    return {
        "replicas_per_node": 0,
        "nodes_per_replica": mapping.nodes_per_replica,
        "pods_per_node": mapping.pods_per_node,
    }


def onprem_option(
    req: CostRequest,
    local: LocalPriceSheet,
    tier_name: str,
    gpus: int,
    mapping: MachineMapping,
    cap: TierCapacity,
    conv: Convert,
    pue: float,
    elec: SourcedAmount | Amount,
    hosting: SourcedAmount | Amount,
    fixed: float,
) -> LocalOption:
    """A bought server of the tier's shape (``gpus`` GPUs), hosting replicas of the plan as ``mapping`` packs
    them on the platform ``existing`` (a replica that spans nodes takes that many servers)."""
    notes: list[str] = []
    per_server = mapping.replicas_per_node
    base: dict[str, Any] = dict(
        tier=tier_name,
        kind="on-prem",
        platform="on-prem",
        **packing(mapping),
        calls_per_replica_year=cap.calls_per_replica_year,
    )
    hw = local.hardware.get(tier_name)
    if req.hardware_price is not None:
        purchase = conv(req.hardware_price.amount, req.hardware_price.currency)
        notes.append("server purchase price given with --hardware-price")
    elif hw is not None:
        purchase = gpus * conv(hw.gpu.amount, hw.gpu.currency) + conv(hw.host.amount, hw.host.currency)
        notes.append(f"server purchase = {gpus} x GPU ({hw.gpu.basis}: {hw.gpu.source}) + host ({hw.host.basis})")
    else:
        return LocalOption(
            **base,
            missing_price=f"no hardware price for tier {tier_name!r} in the local price sheet (give --hardware-price)",
        )
    if per_server > 1:
        notes.append(
            f"the plan needs {gpus // per_server} GPU(s) per replica, so one {gpus}-GPU server runs "
            f"{per_server} replicas"
        )
    if mapping.nodes_per_replica > 1:
        notes.append(
            f"one replica spans {mapping.nodes_per_replica} servers of {gpus} GPU(s) (pipeline parallel "
            f"across them): each replica is priced as {mapping.nodes_per_replica} servers"
        )
    if req.power_kw is not None:
        power = req.power_kw
    elif hw is not None:
        power = hw.power_kw.amount
    else:
        power = 0.0
        notes.append("power not included (no --power-kw)")
    parts = onprem_unit_cost(
        purchase=purchase,
        amortization_years=req.amortization_years,
        power_kw=power,
        pue=pue,
        electricity_per_kwh=conv(elec.amount, elec.currency),
        hosting_per_year=conv(hosting.amount, hosting.currency),
    )
    return LocalOption(
        **base,
        unit_cost_per_year=sum(parts.values()),
        fixed_cost_per_year=fixed,
        breakdown=parts | {"purchase": purchase},
        notes=notes,
    )


def cloud_options(
    req: CostRequest,
    local: LocalPriceSheet,
    tier_name: str,
    platform: str,
    mapping: MachineMapping,
    cap: TierCapacity,
    conv: Convert,
    fixed: float,
) -> list[LocalOption]:
    """On-demand and spot options for the tier's machine on one cloud (a node may run several replicas)."""
    out = []
    machine = mapping.machine_type
    price = local.cloud.get(machine) if machine else None
    for kind, override, field in (
        ("cloud-on-demand", req.on_demand_hourly, "on_demand_per_hour"),
        ("cloud-spot", req.spot_hourly, "spot_per_hour"),
    ):
        base: dict[str, Any] = dict(
            tier=tier_name,
            kind=kind,
            platform=platform,
            machine_type=machine,
            **packing(mapping),
            calls_per_replica_year=cap.calls_per_replica_year,
            fixed_cost_per_year=fixed,
        )
        notes = [n for n in (mapping.substitution, mapping.provisioning_note) if n]
        if override is not None:
            hourly = conv(override.amount, override.currency)
            notes.append(f"hourly price given with --{kind.removeprefix('cloud-')}-hourly")
        elif price is not None and getattr(price, field) is not None:
            hourly = conv(getattr(price, field), price.currency)
            notes.append(
                f"{machine} {price.region} {getattr(price, field):g} {price.currency}/h "
                f"({price.basis}, as of {price.as_of}): {price.source.split()[0]}"
            )
            if price.note:
                notes.append(price.note)
        else:
            flag = f"--{kind.removeprefix('cloud-')}-hourly"
            why = (
                f"no {field.replace('_', ' ')} price for {machine} in the local price sheet, so it is "
                f"user-supplied: pass {flag} PRICE or your own --local-prices sheet"
            )
            if kind == "cloud-spot" and platform == "eks":
                why += " (EC2 Spot prices are set per region and availability zone and change with demand: none is shipped)"
            if price is not None and price.note:
                notes.append(price.note)
            out.append(LocalOption(**base, missing_price=why, notes=notes))
            continue
        parts = cloud_unit_cost(hourly)
        out.append(LocalOption(**base, unit_cost_per_year=sum(parts.values()), breakdown=parts, notes=notes))
    return out
