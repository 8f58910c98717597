"""Time-step-grouped activation scales: K Q/DQ graphs of one target that differ only in activation scales.

A static Q/DQ graph has one scale per tensor for every time step; a deployment can still switch graphs per step.
``quantize_groups`` quantizes the model once per step group of the ranges file (``calibrate --aggregation groups
--groups K``: ``TensorRanges.group_bounds`` / ``group_amax``) and once with the global amax;
``save_grouped`` writes them as one artifact set: the global graph at the usual path (``model.int8.<tag>.onnx``,
for every tool that takes one graph), the K group graphs beside it, every initializer that is byte-identical in all
of them stored once in one shared external-data file, and the manifest (engines/group_manifest.py) that
``sample``/``validate`` route by (engines/timestep_routed.py). What this buys is measured in
docs/timestep-groups.md.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnx

from calibrators.ranges import TensorRanges
from calibrators.settings import GroupBounds
from common.errors import UserError
from common.hashing import sha256_files
from engines.group_manifest import (
    GroupEntry,
    GroupManifest,
    group_model_name,
    manifest_path,
    shared_data_name,
)
from quantization.qdq_policy import QDQPolicy
from quantization.quantize import quantize, save_quantized
from quantization.record import QuantizeRecord

#: Initializers smaller than this stay inside each graph (scales, zero points: they may differ per group).
SHARE_THRESHOLD_BYTES = 1024


def ranges_for_group(ranges: TensorRanges, group: int) -> TensorRanges:
    """``ranges`` with every tensor's amax replaced by its amax in step group ``group`` (no groups left)."""
    if not 0 <= group < len(ranges.group_bounds):
        raise ValueError(f"group {group} of {len(ranges.group_bounds)}")
    return replace(ranges, amax={n: ranges.group_amax[n][group] for n in ranges.amax}, group_bounds=[],
                   group_amax={})


def group_scales_text(bounds: GroupBounds, group: int, count: int) -> str:
    """What the activation scales of group ``group``'s graph are, in words (the record's ``activation_scales``)."""
    return (f"time-step group {group} of {count}: t in [{bounds[0]}, {bounds[1]}], one amax per tensor from the "
            f"ranges' group_amax[{group}]")


def check_groups(ranges: TensorRanges, groups: int, source: str = "the ranges") -> None:
    """UserError unless ``ranges`` hold exactly ``groups`` step groups."""
    if groups < 1:
        raise UserError(f"--timestep-groups must be >= 1, got {groups}")
    have = len(ranges.group_bounds)
    if have == 0:
        raise UserError(f"--timestep-groups {groups}: {source} have no time-step groups (calibrate --aggregation "
                        f"groups --groups {groups})")
    if have != groups:
        raise UserError(f"--timestep-groups {groups}: {source} have {have} time-step groups (calibrate "
                        f"--aggregation groups --groups {groups}, or --timestep-groups {have})")


@dataclass(frozen=True)
class GroupedQuantization:
    """The global-scale graph and its record, and one graph per step group (``bounds[g]``, inclusive t)."""

    global_model: onnx.ModelProto
    record: QuantizeRecord
    bounds: list[GroupBounds]
    models: list[onnx.ModelProto]


def quantize_groups(model: onnx.ModelProto, ranges: TensorRanges, policy: QDQPolicy, groups: int, *,
                    ranges_file: str = "", progress: bool = True) -> GroupedQuantization:
    """``quantize`` once with the global amax and once per step group of ``ranges`` (which must hold ``groups``).

    Weights are rounded the same way in every graph (``nearest`` or ``mse``: they do not depend on activation
    ranges); AdaRound learns its rounding through the activation quantizer, so it would give K different weight
    sets: refused."""
    source = f"ranges '{ranges_file}'" if ranges_file else "the ranges"
    check_groups(ranges, groups, source)
    if policy.weight_rounding == "adaround":
        raise UserError("--timestep-groups with --weight-rounding adaround: AdaRound's rounding depends on the "
                        "activation scales, so the groups would not share weights; use nearest or mse")
    if policy.smoothquant:
        raise UserError("--smoothquant does not combine with --timestep-groups (the per-channel statistics are not "
                        "grouped by time step)")
    global_model, record = quantize(model, ranges, policy, ranges_file=ranges_file, progress=progress)
    models = [quantize(model, ranges_for_group(ranges, g), policy, ranges_file=ranges_file, progress=progress)[0]
              for g in range(groups)]
    return GroupedQuantization(global_model, record, list(ranges.group_bounds), models)


def _shared_names(models: list[onnx.ModelProto]) -> list[str]:
    """Initializers (raw data, >= SHARE_THRESHOLD_BYTES) byte-identical in every model, in the first one's order."""
    first = [t for t in models[0].graph.initializer
             if t.HasField("raw_data") and len(t.raw_data) >= SHARE_THRESHOLD_BYTES]
    others = [{t.name: t for t in m.graph.initializer} for m in models[1:]]
    return [t.name for t in first
            if all(t.name in o and o[t.name].SerializeToString() == t.SerializeToString() for o in others)]


def _externalise(model: onnx.ModelProto, offsets: dict[str, tuple[int, int]], location: str) -> None:
    """Point the initializers named in ``offsets`` (name -> (offset, length)) at ``location`` instead of inline."""
    for t in model.graph.initializer:
        if t.name in offsets:
            offset, length = offsets[t.name]
            t.ClearField("raw_data")
            del t.external_data[:]
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(length))):
                entry = t.external_data.add()
                entry.key, entry.value = key, value
            t.data_location = onnx.TensorProto.EXTERNAL


def save_grouped(result: GroupedQuantization, out: Path, record_path: Path, *, external: bool = False,
                 command: str = "") -> QuantizeRecord:
    """Write the artifact set of ``result`` and return its record.

    Files: the global graph ``out`` (self-contained, as ``save_quantized`` writes it), the K group graphs
    ``<stem>.g<k>.onnx`` with every initializer that is byte-identical in all of them stored once in
    ``<stem>.groups.data``, the record ``record_path`` (``timestep_groups``: the graphs, their scales, the bytes
    stored once), and the manifest ``<stem>.groups.json`` last; each by an atomic rename."""
    shared = _shared_names(result.models)
    data_name = shared_data_name(out)
    by_name = {t.name: t for t in result.models[0].graph.initializer}
    offsets: dict[str, tuple[int, int]] = {}
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp_name:
        tmp = Path(tmp_name)
        with open(tmp / data_name, "wb") as f:
            for name in shared:
                raw = by_name[name].raw_data
                offsets[name] = (f.tell(), len(raw))
                f.write(raw)
        names = [group_model_name(out, g) for g in range(len(result.models))]
        inline_bytes = []
        for model, name in zip(result.models, names, strict=True):
            copy = onnx.ModelProto()
            copy.CopyFrom(model)
            _externalise(copy, offsets, data_name)
            onnx.save_model(copy, str(tmp / name))
            inline_bytes.append((tmp / name).stat().st_size)
        shas = [sha256_files([tmp / n, tmp / data_name]) for n in names]
        count = len(result.models)
        entries = [GroupEntry(a, b, n, s) for (a, b), n, s in zip(result.bounds, names, shas, strict=True)]
        groups_info: dict[str, Any] = {
            "manifest": manifest_path(out).name, "shared_data": data_name,
            "shared_data_bytes": sum(length for _, length in offsets.values()),
            "shared_initializers": len(offsets),
            "group_file_bytes": dict(zip(names, inline_bytes, strict=True)),
            "groups": [{"first_t": e.first_t, "last_t": e.last_t, "model": e.model, "model_sha256": e.model_sha256,
                        "activation_scales": group_scales_text(b, g, count)}
                       for g, (e, b) in enumerate(zip(entries, result.bounds, strict=True))],
        }
        record = replace(result.record, timestep_groups=groups_info)
        # the global graph and the record (this removes a previous group set), then the groups, the manifest last
        record = save_quantized(result.global_model, record, out, record_path, external=external, command=command)
        for name in [data_name, *names]:
            (tmp / name).replace(out.parent / name)
        GroupManifest(target=result.record.target, groups=tuple(entries), shared_data=data_name).save(
            manifest_path(out))
    return record
