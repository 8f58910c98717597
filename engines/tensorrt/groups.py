"""TensorRT engines of a time-step-grouped Q/DQ set (``quantize --target tensorrt --timestep-groups K``): K engines
that differ only in their activation scales, recorded in the global engine's one ``.plan.json``, and the session
that routes each UNet call to its group's engine.

``build_grouped_engines`` builds the global engine (``model.int8.plan``, from ``model.int8.trt.onnx``, for every tool
that takes one engine) and then one engine per group graph (``model.int8.g<k>.plan``, from
``model.int8.trt.g<k>.onnx``), each through ``build_engine`` with the same profiles and options, and writes
``model.int8.plan.json`` last: the build options once, and per group its bounds in t, engine file, sha256 and size,
source graph and layer counts (``engines.tensorrt.plan.GroupEngine``). ``trt_unet_session`` opens that record: one
``TrtSession`` per group engine behind a ``TimestepGroupedSession``, each checked against the record
(``load_checked_group``) when activated; the global engine alone when the build had no groups.

Each engine embeds its weights (Q/DQ scales are constants folded into the INT8 kernels at build time): K engines
hold K copies of the weights in device memory (docs/timestep-groups.md, "TensorRT").
"""

from __future__ import annotations

import functools
from dataclasses import replace
from pathlib import Path

from common.errors import UserError
from common.workdir import WorkDir
from engines.group_manifest import GroupManifest, grouped_manifest_for
from engines.session import ManagedSession
from engines.timestep_routed import TimestepGroupedSession
from engines.tensorrt.build import BuildOptions, build_engine, source_onnx
from engines.tensorrt.plan import (
    GroupEngine,
    PlanInfo,
    file_sha256,
    group_plan_path,
    info_path,
    load_checked_group,
    plan_path,
    read_plan_info,
    write_plan_info,
)


def source_groups(work: WorkDir, precision: str) -> GroupManifest | None:
    """The group manifest beside the ONNX an engine of ``precision`` is built from (int8 and fp8), or None."""
    return grouped_manifest_for(source_onnx(work, precision)) if precision in ("int8", "fp8") else None


def build_grouped_engines(work: WorkDir, options: BuildOptions, command: str = "") -> tuple[Path, PlanInfo]:
    """Build the global engine and, when group graphs lie beside its source, one engine per group; the one
    ``.plan.json`` is written last (its previous version is removed first, so no record names a half-built set).
    Without group graphs: ``build_engine``, unchanged."""
    manifest = source_groups(work, options.precision)
    plan = plan_path(work.root, options.precision)
    old = _previous(plan)
    if manifest is None:
        plan, info = build_engine(work, options, command=command)
        _remove_stale(plan, old, info)
        return plan, info
    source = source_onnx(work, options.precision)
    info_path(plan).unlink(missing_ok=True)
    plan, info = build_engine(work, options, command=command, write_info=False)
    groups = []
    for index, entry in enumerate(manifest.groups):
        group_source = source.parent / entry.model
        print(f"time-step group {index} of {len(manifest.groups)} (t {entry.first_t}..{entry.last_t}):")
        group_plan, group_info = build_engine(work, options, command=command, source=group_source,
                                              plan=group_plan_path(plan, index), write_info=False)
        groups.append(GroupEngine(
            first_t=entry.first_t, last_t=entry.last_t, plan=group_plan.name, plan_sha256=file_sha256(group_plan),
            plan_bytes=group_plan.stat().st_size, source_onnx=entry.model, shared_data=manifest.shared_data,
            source_sha256=entry.model_sha256, layers=dict(group_info.builder.get("layers", {})),
            build_seconds=float(group_info.builder.get("build_seconds", 0.0))))
    info = replace(info, timestep_groups=tuple(groups))
    write_plan_info(plan, info)
    _remove_stale(plan, old, info)
    return plan, info


def _previous(plan: Path) -> PlanInfo | None:
    """The metadata of the engine a build is about to replace (None when there is none or it is unreadable)."""
    try:
        return read_plan_info(plan)
    except UserError:
        return None


def _remove_stale(plan: Path, old: PlanInfo | None, new: PlanInfo) -> None:
    """Delete group engines that the previous ``.plan.json`` named and the new one does not."""
    keep = {g.plan for g in new.timestep_groups}
    for g in old.timestep_groups if old is not None else ():
        if g.plan not in keep:
            (plan.parent / g.plan).unlink(missing_ok=True)


def trt_unet_session(plan: Path) -> tuple[ManagedSession, PlanInfo]:
    """An inactive session on the UNet engine ``plan`` and its metadata: a TimestepGroupedSession of one TrtSession
    per group engine when ``plan``'s ``.plan.json`` records groups, else a TrtSession on ``plan``. Missing engine or
    metadata: UserError; TensorRT version, GPU, sha256 and stale sources are checked on activate."""
    from engines.tensorrt.session import TrtSession

    info = read_plan_info(plan)
    if not info.timestep_groups:
        return TrtSession(plan, cuda_graph=info.cuda_graph), info
    sessions: list[ManagedSession] = [
        TrtSession(plan.parent / g.plan, cuda_graph=info.cuda_graph,
                   checker=functools.partial(load_checked_group, plan, index))
        for index, g in enumerate(info.timestep_groups)]
    return TimestepGroupedSession(sessions, info.group_bounds), info


def describe_engine_groups(info: PlanInfo, source_has_groups: bool) -> str:
    """", K time-step group engines [a, b] ..." for a grouped build; a warning when the work folder has group
    graphs but the engine was built without them; else ""."""
    if info.timestep_groups:
        return f", {len(info.timestep_groups)} time-step group engines " + " ".join(
            f"[{a}, {b}]" for a, b in info.group_bounds)
    if source_has_groups:
        return "; the folder has time-step group graphs but this engine was built before them: the global engine " \
               "runs every step (build again to route)"
    return ""
