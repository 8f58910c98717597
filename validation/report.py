"""``WORK/report/index.html``: one self-contained page (every image a base64 data URI; no external file, script or
font) gathering what the other commands wrote: FP32 vs INT8 grids and per-step errors (validate.json), the layer
sensitivity ranking (sensitivity.json), UNet step latency, the exact commands and the library versions.

Every input is optional: a missing file becomes a note naming the command that makes it.
"""

from __future__ import annotations

import base64
import datetime
import html
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_path
from common.errors import UserError
from common.jsonfile import read_json
from common.hashing import onnx_model_sha256
from common.workdir import WorkDir
from validation.sensitivity_file import FILE_NAME as SENSITIVITY_FILE
from validation.sensitivity_file import SensitivityResult, sensitivity_file
from validation.validate import validate_file

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEFAULT_VALIDATE_BATCH = 4

CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1120px;
       color: #1d2430; background: #fff; line-height: 1.45; }
h1 { font-size: 1.6em; margin-bottom: 0.1em; } h2 { border-bottom: 2px solid #d8dde6; padding-bottom: 4px; }
.sub { color: #5b6573; } .note { color: #8a5a00; background: #fff6e0; padding: 6px 10px; border-radius: 4px; }
.pass { background: #1e8e3e; color: #fff; padding: 2px 10px; border-radius: 10px; }
.fail { background: #c5221f; color: #fff; padding: 2px 10px; border-radius: 10px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 0.92em; }
th, td { border: 1px solid #d8dde6; padding: 3px 9px; text-align: left; } th { background: #eef1f6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.grids { display: flex; gap: 24px; flex-wrap: wrap; } .grids figure { margin: 0; }
.grids img { image-rendering: pixelated; width: 520px; max-width: 100%; border: 1px solid #d8dde6; }
img.chart { max-width: 100%; } code, pre { background: #f3f5f9; padding: 2px 5px; border-radius: 3px; }
pre { padding: 8px; white-space: pre-wrap; word-break: break-all; }
"""


@dataclass(frozen=True)
class ReportConfig:
    """latency: measure ORT step latency when validate.json has none; repeats: interleaved rounds per model and
    batch; threads: intra-op threads (0 = all cores); top_layers: bars in the sensitivity chart; backend: the CPU
    backend of the latency rows (``ort`` or ``openvino``); precision: the quantized graph reported (``int8``:
    ``index.html`` from validate.json and sensitivity.json; ``fp8``: ``fp8.html`` from their ``.fp8`` twins)."""

    latency: bool = True
    repeats: int = 5
    threads: int = 0
    top_layers: int = 30
    backend: str = "ort"
    precision: str = "int8"

    @property
    def page(self) -> str:
        return "index.html" if self.precision == "int8" else f"{self.precision}.html"




def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def embedded_png(relative: str, root: Path) -> str | None:
    """The PNG ``root/relative`` as a data URI; None when missing, outside ``root`` or not a PNG."""
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()) or not path.is_file():
        return None
    png = path.read_bytes()
    return data_uri(png) if png.startswith(PNG_MAGIC) else None


def _e(value: Any) -> str:
    return html.escape(str(value))


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _num(value: Any, fmt: str) -> str:
    try:
        number = int(value) if fmt == "d" else float(value)
        return f'<td class="num">{format(number, fmt)}</td>'
    except (TypeError, ValueError, OverflowError):
        return f'<td class="num">{_e(value)}</td>'


def _table(header: list[str] | None, rows: list[list[str]]) -> str:
    """``rows`` hold ready-made ``<td>``/``<th>`` cells; no header row when ``header`` is None."""
    head = "" if header is None else "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"
    body = "".join("<tr>" + "".join(r) + "</tr>" for r in rows)
    return f"<table>{head}{body}</table>"


def _kv_table(items: dict[str, Any]) -> str:
    return _table(None, [[f"<th>{_e(k)}</th>", f"<td>{_e(v)}</td>"] for k, v in items.items()])


def section_summary(work: WorkDir, export: dict[str, Any], quantize: dict[str, Any] | None,
                    ranges: dict[str, Any] | None, validate: dict[str, Any] | None) -> str:
    verdict = ""
    if validate is not None and "passed" in validate:
        verdict = '<span class="pass">validation passed</span>' if validate["passed"] else \
            '<span class="fail">validation failed</span>'
    items: dict[str, Any] = {"work folder": work.root, "model": export.get("source", {}).get("model_dir", "?"),
                             "model class": export.get("model_class", "?"),
                             "parameters": export.get("num_parameters", "?")}
    if ranges is not None:
        s = ranges.get("settings", {})
        items["calibration"] = f"{s.get('method')} · estimator {s.get('estimator', {}).get('method')} · " \
                               f"aggregation {s.get('aggregation', {}).get('method')}"
    if quantize is not None:
        items["Q/DQ policy"] = ", ".join(f"{k}={v}" for k, v in sorted(quantize.get("policy", {}).items()))
        items.update({k.replace("_", " "): v for k, v in quantize.get("summary", {}).items()})
        kept = quantize.get("sensitivity_keep_float", {}).get("nodes") or []
        if kept:
            items["kept float (sensitivity)"] = ", ".join(kept)
    out = f"<h2>Summary {verdict}</h2>" + _kv_table(items)
    if quantize is None:
        out += _note(f"no quantize record: run python -m tools quantize {work.root}")
    if validate is not None and validate.get("violations"):
        out += "<p>Violations:</p><ul>" + "".join(f"<li>{_e(v)}</li>" for v in validate["violations"]) + "</ul>"
    return out


def section_images(work: WorkDir, validate: dict[str, Any] | None, precision: str = "int8") -> str:
    title_q = precision.upper() + (" (simulated on the CPU)" if precision == "fp8" else "")
    out = f"<h2>Final images: FP32 vs {_e(title_q)} (same seeds)</h2>"
    grids = (validate or {}).get("grids") or {}
    figures = []
    for key, title in (("fp32", "FP32"), ("int8", precision.upper())):
        uri = embedded_png(str(grids[key]), work.report_dir) if key in grids else None
        if uri is not None:
            figures.append(f'<figure><figcaption>{title}</figcaption><img id="grid-{key}" alt="{title} samples" '
                           f'src="{uri}"></figure>')
    if not figures:
        return out + _note(f"no sample grids: run python -m tools validate {work.root}")
    out += '<div class="grids">' + "".join(figures) + "</div>"
    images = (validate or {}).get("images") or {}
    labels = {"psnr": ("PSNR (dB)", ".2f"), "ssim": ("SSIM", ".4f"), "fd_digits": ("FD-digits", ".3f"),
              "fid": ("FID", ".2f"), "num": ("images", "d"),
              "fp32_off_range": ("FP32 trajectories off the training range", ".0f"),
              "quantized_off_range": ("quantized trajectories off the training range", ".0f")}
    cells = [(labels[k][0], _num(images[k], labels[k][1])) for k in labels if k in images]
    if cells:
        out += _table([c[0] for c in cells], [[c[1] for c in cells]])
    return out


def section_steps(work: WorkDir, validate: dict[str, Any] | None) -> str:
    from validation.report_plots import step_error_png

    out = "<h2>UNet output error per denoising step</h2>"
    steps = (validate or {}).get("steps") or []
    if not steps:
        return out + _note(f"no per-step metrics: run python -m tools validate {work.root}")
    out += f'<img class="chart" id="step-chart" alt="per-step error" src="{data_uri(step_error_png(steps))}">'
    fmt = {"cosine": ".6f", "psnr_db": ".2f", "snr_db": ".2f", "mean_abs": ".4g", "max_abs": ".4g"}
    rows = [[_num(s.get("t"), "d")] + [_num(s.get(k), f) for k, f in fmt.items()] for s in steps]
    thresholds = (validate or {}).get("thresholds") or {}
    out += _table(["t", "cosine", "PSNR (dB)", "SNR (dB)", "mean |e|", "max |e|"], rows)
    if thresholds:
        active = ", ".join(f"{k} {v}" for k, v in sorted(thresholds.items()) if v is not None)
        out += f"<p>Thresholds: {_e(active or 'none')}</p>"
    return out


def section_sensitivity(work: WorkDir, sensitivity: SensitivityResult | None, kept: list[str], top: int,
                        problem: str = "") -> str:
    from validation.report_plots import sensitivity_png

    out = "<h2>Layer sensitivity</h2>"
    if sensitivity is None:
        return out + _note(problem or f"no {SENSITIVITY_FILE}: run python -m tools sensitivity {work.root}")
    s = sensitivity.settings
    what = s.get("what") or f"UNet output MSE at t = {s.get('timesteps')}"
    out += (f'<p class="sub">Each layer quantized alone ({_e(sensitivity.policy.get("target"))} policy) against '
            f'FP32: {_e(what)}; ranked by MSE. Grey bars: kept float by quantize --keep-float.</p>')
    png = sensitivity_png(sensitivity.layers, top=top, kept=kept)
    out += f'<img class="chart" id="sensitivity-chart" alt="layer sensitivity" src="{data_uri(png)}">'
    rows = [[_num(x.rank, "d"), f"<td>{_e(x.node)}</td>", f"<td>{_e(x.op_type)}</td>", _num(x.mse, ".3e"),
             _num(x.cosine, ".6f")] for x in sorted(sensitivity.layers, key=lambda x: x.rank)[:10]]
    return out + _table(["rank", "node", "op", "MSE", "cosine"], rows)


def latency_rows(work: WorkDir, export: dict[str, Any], validate: dict[str, Any] | None,
                 cfg: ReportConfig) -> tuple[list[dict[str, Any]], str]:
    """Latency rows and where they come from: validate.json's ``latency``, or measured now on ONNX Runtime."""
    if validate is not None and validate.get("latency"):
        return list(validate["latency"]), "from validate.json"
    if not cfg.latency:
        return [], "not measured (--no-latency)"
    from validation.latency import step_latency_ms

    from engines.cpu_backend import CPU_NAMES
    from engines.openvino_session import CACHE_FOLDER

    short = {"ort": "ORT", "openvino": "OpenVINO"}[cfg.backend]
    models = {f"{short} FP32": work.model}
    for target, path in work.int8_models().items():
        models[f"{short} INT8 ({target} graph)"] = path
    if cfg.precision == "fp8" and work.fp8_model.is_file():
        models["ORT FP8 (simulated: dequantized, float arithmetic)"] = work.fp8_model
    batch = int(((validate or {}).get("settings") or {}).get("num", DEFAULT_VALIDATE_BATCH))
    rows = step_latency_ms(models, export, sorted({1, batch}), cfg.repeats, cfg.threads, cfg.backend,
                           work.root / CACHE_FOLDER)
    return rows, (f"measured now: {CPU_NAMES[cfg.backend]} CPU, median of {cfg.repeats} interleaved calls per model "
                  "and batch")


def section_latency(rows: list[dict[str, Any]], source: str) -> str:
    out = f'<h2>UNet step latency</h2><p class="sub">{_e(source)}</p>'
    if not rows:
        return out + _note("no latency figures")
    backends = list(dict.fromkeys(str(r["backend"]) for r in rows))
    batches = sorted({int(r["batch"]) for r in rows})
    ms = {(str(r["backend"]), int(r["batch"])): float(r["ms"]) for r in rows}
    header = ["batch"] + [f"{b} (ms)" for b in backends]
    speedup = len(backends) == 2
    if speedup:
        header.append(f"speed-up ({backends[0]} ÷ {backends[1]})")
    table = []
    for b in batches:
        row = [_num(b, "d")] + [_num(ms.get((k, b), "–"), ".2f") for k in backends]
        if speedup and (backends[0], b) in ms and (backends[1], b) in ms:
            row.append(_num(ms[(backends[0], b)] / ms[(backends[1], b)], ".2f"))
        table.append(row)
    return out + _table(header, table)


def section_provenance(work: WorkDir, records: dict[str, dict[str, Any] | None],
                       versions: dict[str, dict[str, Any]]) -> str:
    out = "<h2>Exact commands</h2>"
    cmds = [(name, rec.get("command")) for name, rec in records.items() if rec is not None and rec.get("command")]
    out += "".join(f"<p>{_e(name)}</p><pre>{_e(cmd)}</pre>" for name, cmd in cmds) or _note("no commands recorded")
    out += "<h2>Library versions</h2>"
    names = sorted({k for v in versions.values() for k in v})
    rows = [[f"<th>{_e(n)}</th>"] + [f"<td>{_e(v.get(n, ''))}</td>" for v in versions.values()] for n in names]
    return out + _table(["library"] + list(versions), rows)


def runtime_versions() -> dict[str, str]:
    import matplotlib
    import numpy
    import onnx
    import onnxruntime

    return {"python": platform.python_version(), "numpy": numpy.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "matplotlib": matplotlib.__version__}


def build_html(work: WorkDir, cfg: ReportConfig = ReportConfig()) -> str:
    """The whole page for ``work`` (an exported work folder)."""
    export = work.load_export_info()
    if cfg.precision == "fp8":
        quantize = read_json(work.quantize_record(work.model_for("fp8")))
    else:
        quantize = read_json(work.quantize_record(work.model_for("int8"))) if work.int8_models() else None
    ranges = read_json(work.ranges)
    validate = read_json(work.report_dir / validate_file(cfg.precision))
    sens_path = work.report_dir / sensitivity_file(cfg.precision)
    sensitivity, stale = None, ""
    if sens_path.is_file():
        try:
            sensitivity = SensitivityResult.load(sens_path, onnx_model_sha256(work.model_for("fp32")))
        except UserError as exc:  # stale or malformed: say so on the page, the rest of the report stands
            stale = str(exc)
    kept = list((quantize or {}).get("sensitivity_keep_float", {}).get("nodes") or [])
    lat_rows, lat_source = latency_rows(work, export, validate, cfg)
    versions = {k: v for k, v in (("export", export.get("versions")), ("validate", (validate or {}).get("versions")),
                                  ("report", runtime_versions())) if v}
    records = {"export": export, "quantize": quantize,
               "sensitivity": {"command": sensitivity.command} if sensitivity else None, "validate": validate}
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = "".join([
        f"<h1>Quantization report: {_e(work.root.name)}</h1><p class=\"sub\">generated {stamp} by "
        f"<code>python -m tools report</code></p>",
        section_summary(work, export, quantize, ranges, validate),
        section_images(work, validate, cfg.precision),
        section_steps(work, validate),
        section_sensitivity(work, sensitivity, kept, cfg.top_layers, stale),
        section_latency(lat_rows, lat_source),
        section_provenance(work, records, versions),
    ])
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{_e(work.root.name)} · '
            f"quantization report</title><style>{CSS}</style></head><body>{body}</body></html>\n")


def write_report(work: WorkDir, cfg: ReportConfig = ReportConfig()) -> Path:
    """Write ``WORK/report/index.html`` (``fp8.html`` for ``cfg.precision`` fp8) atomically; returns its path."""
    page = build_html(work, cfg)
    out = work.report_dir / cfg.page
    with atomic_path(out) as tmp:
        tmp.write_text(page, encoding="utf-8")
        tmp.chmod(0o644)
    return out
