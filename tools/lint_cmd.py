"""``python -m tools lint MODEL.onnx``: report violations of TensorRT's Q/DQ rules (exit 1 when any)."""

from __future__ import annotations

import json
from pathlib import Path


from common.errors import UserError
from common.onnx_file import load_onnx
from quantization.trt_lint import fp8_notes, lint_model
from tools.cli_parser import CliParser


def main(argv: list[str]) -> int:
    p = CliParser(prog="python -m tools lint", description=__doc__)
    p.add_argument("model", type=Path, help="Q/DQ ONNX model")
    p.add_argument("--json", action="store_true", help="print violations as JSON")
    p.add_argument("--target", choices=["tensorrt", "onnxruntime"], default="tensorrt",
                   help="onnxruntime also accepts INT32 bias DequantizeLinear (QLinearConv needs it)")
    args = p.parse_args(argv)
    if not args.model.is_file():
        raise UserError(f"model '{args.model}' does not exist")
    model = load_onnx(args.model, external_data=True)
    violations = lint_model(model, allow_int32_bias=args.target == "onnxruntime")
    if args.json:
        print(json.dumps([v.to_json() for v in violations], indent=2))
    else:
        for v in violations:
            print(v)
        n_q = sum(n.op_type == "QuantizeLinear" for n in model.graph.node)
        n_dq = sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
        for note in fp8_notes(model):
            print(f"  {note}")
        verdict = "passes" if not violations else f"has {len(violations)} violation(s) of"
        print(f"{args.model}: {n_q} Q / {n_dq} DQ nodes; {verdict} TensorRT's Q/DQ rules")
    return 1 if violations else 0
