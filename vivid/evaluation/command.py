"""`python -m vivid evaluate`: its options, turned into an EvaluationConfig."""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from .engines import ENGINE_NAMES


def add_parser(sub) -> argparse.ArgumentParser:
    """Add the `evaluate` subcommand to the CLI's subparsers (cheap: imports nothing heavy)."""
    e = sub.add_parser("evaluate", help="score engines on self- and cross-reenactment (the paper's Table 1)")
    e.add_argument("--self", dest="self_clips", nargs="+", default=[], metavar="VIDEO",
                   help="self-reenactment clips (first frame = reference, compared with the real frames)")
    e.add_argument("--cross", nargs="+", default=[], metavar="PORTRAIT", help="cross-reenactment portraits")
    e.add_argument("--driving", nargs="+", default=[], metavar="VIDEO", help="clips that drive every --cross portrait")
    e.add_argument("--engines", default="still,preview",
                   help=f"comma-separated, from {','.join(ENGINE_NAMES)} (default still,preview)")
    e.add_argument("--weights", help="diffusion engine: folder saved by VividPipeline.save_pretrained, a hub id, "
                   "'mini' (the shipped model, also the default when there is one) or 'tiny'")
    e.add_argument("--steps", type=int, default=None,
                   help="diffusion denoising steps (default: what the model recommends)")
    e.add_argument("--frames", type=int, default=None, help="use at most N frames of each clip")
    e.add_argument("--resolution", type=int, default=512, help="side of the scoring face crop in px (default 512)")
    e.add_argument("--lpips-backbone", type=Path, default=None,
                   help="torchvision AlexNet checkpoint for LPIPS (default: torch's hub cache)")
    e.add_argument("--download-metric-weights", action="store_true",
                   help="let LPIPS download its AlexNet backbone when online")
    e.add_argument("--no-side-by-side", action="store_true", help="skip the side-by-side videos")
    e.add_argument("-o", "--output", required=True, type=Path, help="output folder")
    return e


def run(args: argparse.Namespace) -> None:
    """Run `evaluate` from parsed arguments and say where the results are."""
    from ..sampling import Sampling
    from .harness import EvaluationConfig, evaluate
    from .learned_metrics import MetricWeights

    config = EvaluationConfig(
        output=args.output,
        self_clips=[Path(p) for p in args.self_clips],
        portraits=[Path(p) for p in args.cross],
        driving=[Path(p) for p in args.driving],
        engines=tuple(e.strip() for e in args.engines.split(",") if e.strip()),
        weights=args.weights,
        frames=args.frames,
        resolution=args.resolution,
        diffusion=Sampling(steps=args.steps),
        metric_weights=MetricWeights(args.lpips_backbone, args.download_metric_weights),
        side_by_side=not args.no_side_by_side,
    )
    command = shlex.join(["python", "-m", "vivid", *sys.argv[1:]]) if sys.argv[1:2] == ["evaluate"] else None
    out = evaluate(config, command=command)
    print(f"wrote {out / 'table.md'}", file=sys.stderr)
    print((out / "table.md").read_text().split("\n## ")[0])
