"""Stand-ins for facer's FaRL models (the real weights download at run time, which this
machine cannot do), shared by the tests of every FaRL path.

The stand-in parser is a real TorchScript file loaded by facer's own FaRLFaceParser: it
always outputs a canonical face layout in facer's aligned frame, so after facer's warping
the parts must land on the real face of the photo. The stand-in aligner returns WFLW-shaped
98 points around the alignment eyes.
"""
from __future__ import annotations

from pathlib import Path

import facer
import numpy as np
import torch
import torch.nn.functional as F
from facer.transform import _standard_face_pts, make_tanh_warp_grid

from vivid.face.farl_backend import WFLW_EYES, WFLW_PUPILS, FarlModels

LAPA = ["background", "face", "rb", "lb", "re", "le", "nose", "ulip", "imouth", "llip", "hair"]


def canonical_layout(size: int = 448) -> torch.Tensor:
    """LaPa class map of a generic face in facer's aligned-and-warped 448 frame."""
    pts = ((_standard_face_pts() + 1) * (size - 1) / 2).numpy()  # eyes, nose, mouth corners
    yy, xx = np.mgrid[0:size, 0:size]
    lab = np.zeros((size, size), np.int64)
    eye_gap = pts[1, 0] - pts[0, 0]
    centre = pts[:2].mean(axis=0)
    lab[((xx - centre[0]) / (1.1 * eye_gap)) ** 2 + ((yy - pts[2, 1]) / (1.5 * eye_gap)) ** 2 < 1] = 1
    for i, (brow, eye) in enumerate([(2, 4), (3, 5)]):  # image-left first: facer's "rb"/"re"
        ex, ey = pts[i]
        lab[(np.abs(xx - ex) < 0.3 * eye_gap) & (np.abs(yy - (ey - 0.35 * eye_gap)) < 0.06 * eye_gap)] = brow
        lab[((xx - ex) / (0.25 * eye_gap)) ** 2 + ((yy - ey) / (0.12 * eye_gap)) ** 2 < 1] = eye
    lab[(np.abs(xx - pts[2, 0]) < 0.15 * eye_gap) & (yy > pts[:2, 1].mean() + 0.1 * eye_gap) & (yy < pts[2, 1])] = 6
    mouth_y = pts[3:, 1].mean()
    in_mouth = (xx > pts[3, 0]) & (xx < pts[4, 0])
    lab[in_mouth & (yy > mouth_y - 0.12 * eye_gap) & (yy <= mouth_y)] = 7
    lab[in_mouth & (yy > mouth_y) & (yy < mouth_y + 0.15 * eye_gap)] = 9
    # facer's parser sees the tanh-warped crop: warp the layout the same way.
    grid = make_tanh_warp_grid(torch.eye(3)[None], 0.8, (size, size), (size, size))
    onehot = F.one_hot(torch.from_numpy(lab), 11).permute(2, 0, 1)[None].float()
    return F.grid_sample(onehot, grid, mode="nearest", align_corners=False)


class StandInParser(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("logits", canonical_layout() * 10)

    def forward(self, images: torch.Tensor):
        logits = self.logits.expand(images.shape[0], -1, -1, -1)
        return logits, logits


class StandInAligner(torch.nn.Module):
    """facer's aligner interface; 98 WFLW points with eye contours around the given eyes."""

    def forward(self, images, data):
        pts5 = data["points"][0]
        out = torch.zeros(1, 98, 2)
        gap = float(pts5[1, 0] - pts5[0, 0])
        angles = torch.linspace(0, 2 * np.pi, 9)[:-1]
        ring = torch.stack([0.25 * gap * torch.cos(angles), 0.1 * gap * torch.sin(angles)], 1)
        for idx, pupil, eye in zip(WFLW_EYES, WFLW_PUPILS, pts5[:2]):
            out[0, list(idx)] = eye + ring
            out[0, pupil] = eye
        data["alignment"] = out
        return data


def standin_models(folder: Path) -> FarlModels:
    """facer's real FaRL parser class loading a stand-in TorchScript file, and the aligner."""
    path = folder / "standin_parser_jit.pt"
    torch.jit.save(torch.jit.script(StandInParser()), str(path))
    parser = facer.face_parser("farl/lapa/448", device="cpu", model_path=str(path))
    return FarlModels(parser=parser, aligner=StandInAligner())
