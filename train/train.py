"""Train VividPortraits: `accelerate launch train/train.py --stage 1|2 --data DATA --output RUN`
(or plain `python train/train.py ...` for one process). The walk-through is train/README.md;
every setting is in vivid/training/config.py, defaults in train/configs/stage{1,2}.yaml."""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

if TYPE_CHECKING:
    from vivid.training import TrainConfig


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="train/train.py", description=__doc__.split("\n")[0])
    p.add_argument("--stage", type=int, choices=[1, 2], required=True, help="1: frame pairs; 2: temporal layers on clips")
    p.add_argument("--data", required=True, help="prepared data folder (train/prepare_data.py)")
    p.add_argument("--output", required=True, help="run folder: metrics.jsonl, checkpoints/, model/, samples/")
    p.add_argument("--config", help="YAML settings (default: train/configs/stage<N>.yaml; with --preset mini: "
                   "train/configs/mini-stage<N>.yaml)")
    p.add_argument("--preset", choices=["paper", "mini"], default="paper",
                   help="paper: SD 1.5-sized networks from the base models (GPUs); mini: VividPortraits-mini, "
                   "narrower networks at 128 px that train on a CPU in hours (train/README.md)")
    p.add_argument("--init", help="stage 2: the stage 1 model folder (RUN1/model)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --output")
    p.add_argument("--val-data", help="prepared clips to validate on (default: a share of --data training never sees)")
    p.add_argument("--tiny", action="store_true", help="tiny random networks at 64 px with the settings that make them "
                   "learn on a CPU in minutes (vivid/training/config.py: TINY_PRESET); for tests and proofs")
    p.add_argument("--resolution", type=int, help="training resolution in px (default 512; --tiny: 64)")
    p.add_argument("--max-steps", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--save-every", type=int, help="steps between checkpoints (and model exports)")
    p.add_argument("--val-every", type=int, help="steps between validation losses and sample videos")
    p.add_argument("--batch-size", type=int, help="per process")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--mixed-precision", choices=["no", "fp16", "bf16"])
    p.add_argument("--device", choices=["cpu"], help="force the CPU (accelerate launch --cpu does the same)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any other setting of vivid/training/config.py, e.g. --set augment=true (repeatable)")
    return p


def config_from(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: the stage's YAML file, the tiny preset, then --set values, then
    the flags given (a flag left out does not undo the same setting given with --set)."""
    import yaml

    from vivid.training import ConfigError, TrainConfig

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set needs KEY=VALUE, got {item!r}")
        overrides[key.strip()] = yaml.safe_load(value)
    given = {k: v for k in ("resolution", "max_steps", "seed", "save_every", "val_every", "batch_size",
                            "learning_rate", "mixed_precision") if (v := getattr(args, k)) is not None}
    prefix = "mini-" if args.preset == "mini" else ""
    config_file = args.config or ROOT / "train" / "configs" / f"{prefix}stage{args.stage}.yaml"
    return TrainConfig.load(config_file, tiny=args.tiny, **{**overrides, **given, "stage": args.stage})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if os.environ.get("LOCAL_RANK", "0") == "0" else logging.WARNING,
                        format="%(levelname)s: %(message)s")
    from vivid.disk_space import as_disk_full
    from vivid.training import ConfigError, DataError, InitError, ResumeError, Trainer

    try:
        config = config_from(args)
        trainer = Trainer(config, args.data, args.output, init=args.init, resume=args.resume, val_data=args.val_data,
                          device=args.device)
    except (ConfigError, DataError, InitError, ResumeError) as exc:
        print(f"train.py: error: {exc}", file=sys.stderr)
        return 2
    try:
        trainer.run()
    except Exception as exc:
        full = as_disk_full(exc)  # wherever the disk filled: checkpoints, the model, metrics, samples
        if full is None:
            raise
        print(f"train.py: error: {full}; then continue with --resume", file=sys.stderr)  # earlier checkpoints intact
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
