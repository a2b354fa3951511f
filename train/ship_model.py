"""Turn a trained model folder into the model the project ships (or any compact copy of it):
the networks converted to bf16 (or fp16), the sampling settings it recommends written into its
model_index.json, and the training record kept beside it.

    python train/ship_model.py RUN2/model -o assets/mini --steps 10 --guidance 2.0 --scheduler DDIMScheduler

The model takes its recommended settings whenever the user gives none (`VividPipeline.from_pretrained`
installs the scheduler, `VividPipeline.check_inputs` fills steps and guidance;
`vivid.models.saved.SamplingDefaults`).
"""
from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="train/ship_model.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a trained model folder (RUN/model)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder to write (replaced when complete)")
    parser.add_argument("--dtype", choices=["bf16", "fp16"], default="bf16", help="number format of the weights files")
    parser.add_argument("--steps", type=int, help="recommended denoising steps")
    parser.add_argument("--guidance", type=float, help="recommended guidance scale")
    parser.add_argument("--scheduler", help="recommended diffusers scheduler class, e.g. DDIMScheduler")
    args = parser.parse_args(argv)

    from vivid import VividPipeline
    from vivid.errors import OptionError, WeightsError
    from vivid.models.saved import SamplingDefaults, check_weights_folder

    try:
        check_weights_folder(args.model)
        recommended = {k: v for k, v in (("steps", args.steps), ("guidance", args.guidance),
                                         ("scheduler", args.scheduler)) if v is not None}
        SamplingDefaults.from_config(recommended, "--steps/--guidance/--scheduler")  # refused here, not at load
    except (OptionError, WeightsError) as exc:
        parser.error(str(exc))
    pipe = VividPipeline.from_pretrained(args.model, device="cpu", dtype=args.dtype, disk_offload=False)
    pipe.register_to_config(sampling_defaults=recommended)
    tmp = args.output.with_name(args.output.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    pipe.save_pretrained(tmp)
    training = args.model / "training.json"
    if training.is_file():
        shutil.copy2(training, tmp / training.name)
    keep = [p for p in args.output.glob("*") if p.is_file() and p.suffix == ".md"] if args.output.is_dir() else []
    for card in keep:  # the model card is written by hand: carried over, never lost
        shutil.copy2(card, tmp / card.name)
    old = args.output.with_name(args.output.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if args.output.exists():
        args.output.rename(old)
    tmp.rename(args.output)
    shutil.rmtree(old, ignore_errors=True)
    size = sum(p.stat().st_size for p in args.output.rglob("*.safetensors"))
    print(f"wrote {args.output}: {size / 1e6:.1f} MB of {args.dtype} weights; recommends {recommended or 'nothing'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
