"""Convert a TAESD-family checkpoint (e.g. TAEF2's `taef2_encoder.pth` + `taef2_decoder.pth`
from github.com/madebyollin/taesd) into a `TinyAutoencoder` folder (config + fp16 safetensors).

    python train/convert_autoencoder.py taef2_encoder.pth taef2_decoder.pth -o assets/taef2

Run once; the project ships the result (assets/taef2/README.md). The .pth files are read with
`torch.load(weights_only=True)`: plain tensors, no pickled code.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vivid.models.tiny_autoencoder import from_taesd_state_dicts  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("encoder", type=Path, help="the encoder checkpoint (.pth state dict)")
    parser.add_argument("decoder", type=Path, help="the decoder checkpoint (.pth state dict)")
    parser.add_argument("-o", "--output", type=Path, required=True, help="folder to write")
    parser.add_argument("--latent-channels", type=int, default=32, help="32 for TAEF2")
    args = parser.parse_args(argv)
    for path in (args.encoder, args.decoder):
        if not path.is_file():
            parser.error(f"{path}: no such file")
    model = from_taesd_state_dicts(torch.load(args.encoder, map_location="cpu", weights_only=True),
                                   torch.load(args.decoder, map_location="cpu", weights_only=True),
                                   {"latent_channels": args.latent_channels})
    torch.nn.Module.to(model, torch.float16).save_pretrained(args.output)  # the checkpoints are fp16 already: nothing is lost
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
