"""Convert PAT weights (the authors' Keras H5, or .pt) to the native safetensors format.

    python -m models.pat.convert PAT-M_29k_weights.h5 encoder.safetensors
    python -m models.pat.convert finetuned.h5 encoder.safetensors --head heads/depression.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from models.pat.weights import WeightsError, load_encoder, load_head, save_encoder, save_head


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m models.pat.convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="Keras .h5 (save_weights or whole model), .safetensors or .pt")
    parser.add_argument("target", type=Path, help="output .safetensors")
    parser.add_argument("--patch-size", type=int, help="only for a Conv encoder of a non-published size")
    parser.add_argument("--head", type=Path, help="also write the fine-tuning head (dense_128/output) here")
    args = parser.parse_args(argv)
    if args.target.suffix != ".safetensors":
        parser.error("the target must end in .safetensors")
    try:
        encoder = load_encoder(args.source, patch_size=args.patch_size)
        head = load_head(args.source) if args.head else None
    except WeightsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    args.target.parent.mkdir(parents=True, exist_ok=True)
    save_encoder(encoder, args.target)
    params = sum(p.numel() for p in encoder.parameters())
    print(f"{args.target}: {encoder.spec.variant}, patch size {encoder.spec.patch_size}, {params:,} parameters")
    if head is not None:
        args.head.parent.mkdir(parents=True, exist_ok=True)
        save_head(head, args.head)
        print(f"{args.head}: task head")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
