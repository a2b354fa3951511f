"""The paper's parser: facer's FaRL face parsing (LaPa or CelebAMask-HQ) with FaRL's WFLW
landmarks (98 points, both pupils) for the eyes.

facer downloads its TorchScript weights into torch's hub cache on first use; on a machine
without network put the files in that cache or in a folder named by $VIVID_FARL_DIR.
Faces are found and aligned with the MediaPipe mesh (eyes, nose tip, mouth corners), so
no detector weights are needed.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..terminal import library_prints
from .analysis import FaceAnalysis
from .labels import LABEL_INDEX

PARSER_FILES = {
    "lapa/448": "face_parsing.farl.lapa.main_ema_136500_jit191.pt",
    "celebm/448": "face_parsing.farl.celebm.main_ema_181500_jit.pt",
}
ALIGNER_FILE = "face_alignment.farl.wflw.main_ema_jit.pt"

#: facer label names -> ours. Sided names are resolved to image-left/right by position.
FARL_TO_LABEL = {
    "background": "background", "face": "skin", "nose": "nose", "ulip": "upper_lip",
    "imouth": "inner_mouth", "llip": "lower_lip", "hair": "hair", "hat": "hair",
    "neck": "body", "neck_l": "body", "cloth": "body", "rr": "skin", "lr": "skin",
    "earr": "skin", "eyeg": "skin", "rb": "brow", "lb": "brow", "re": "eye", "le": "eye",
}

# WFLW 98-point layout: two 8-point eye contours and the two pupils.
WFLW_EYES = (tuple(range(60, 68)), tuple(range(68, 76)))
WFLW_PUPILS = (96, 97)


class FacerModel(Protocol):
    """facer's parser/aligner interface: (images b x 3 x h x w uint8, data) -> data."""

    def __call__(self, images: Any, data: dict[str, Any]) -> dict[str, Any]: ...


def weights_dir() -> Path:
    """Where facer keeps (and where we look for) FaRL weights."""
    env = os.environ.get("VIVID_FARL_DIR")
    if env:
        return Path(env)
    if "torch" in sys.modules:  # torch.hub.set_dir may have moved it
        import torch

        return Path(torch.hub.get_dir()) / "checkpoints"
    return default_hub_dir() / "checkpoints"


def default_hub_dir() -> Path:
    """torch.hub's folder as torch computes it when nobody moved it, without importing torch
    (1.2 s) only to look whether two files are there."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub"


def local_weights(parser_conf: str = "lapa/448") -> tuple[Path, Path] | None:
    """Paths of the parser and aligner weights if both are on disk, else None."""
    folder = weights_dir()
    parser, aligner = folder / PARSER_FILES[parser_conf], folder / ALIGNER_FILE
    return (parser, aligner) if parser.is_file() and aligner.is_file() else None


@dataclass
class FarlModels:
    parser: FacerModel
    aligner: FacerModel
    device: str = "cpu"  # where the models run; images and boxes are sent there

    @classmethod
    def load(cls, parser_conf: str = "lapa/448", device: str = "cpu", download: bool = False) -> "FarlModels":
        """facer's models from local files (or facer's own download when `download`)."""
        import facer

        paths = local_weights(parser_conf)
        if paths is None and not download:
            raise FileNotFoundError(
                f"FaRL weights not found in {weights_dir()} (need {PARSER_FILES[parser_conf]} and "
                f"{ALIGNER_FILE}); set VIVID_FARL_DIR or use backend='mesh'"
            )
        kw = [{}, {}] if paths is None else [{"model_path": str(paths[0])}, {"model_path": str(paths[1])}]
        try:
            with library_prints():  # facer's download notices and progress bars: --verbose only
                parser = facer.face_parser(f"farl/{parser_conf}", device=device, **kw[0])
                aligner = facer.face_aligner("farl/wflw/448", device=device, **kw[1])
        except OSError as exc:  # e.g. no network: say where the files go, as facer's hidden notice did
            if paths is not None:
                raise
            raise FileNotFoundError(
                f"FaRL weights not found in {weights_dir()} and could not be downloaded ({exc}); put "
                f"{PARSER_FILES[parser_conf]} and {ALIGNER_FILE} there, set VIVID_FARL_DIR or use backend='mesh'"
            ) from exc
        return cls(parser, aligner, device)


def five_points(mesh_points: np.ndarray) -> np.ndarray:
    """facer's alignment points from mesh points: eye centres (image-left first), nose tip,
    mouth corners (image-left first)."""
    from . import mesh_topology as mt

    eyes = sorted((mesh_points[list(c)].mean(axis=0) for c in mt.FIVE_POINT_EYE_CONTOURS), key=lambda p: p[0])
    mouth = sorted((mesh_points[i] for i in mt.MOUTH_CORNERS), key=lambda p: p[0])
    return np.array([eyes[0], eyes[1], mesh_points[mt.NOSE_TIP], mouth[0], mouth[1]], np.float32)


def _facer_data(points: np.ndarray, box: tuple[float, float, float, float], device: str = "cpu") -> dict[str, Any]:
    import torch

    return {
        "rects": torch.tensor([box], dtype=torch.float32, device=device),
        "points": torch.from_numpy(points[None]).to(device),
        "scores": torch.ones(1, device=device),
        "image_ids": torch.zeros(1, dtype=torch.long, device=device),
    }


def analyze_with_farl(
    models: FarlModels, rgb: np.ndarray, mesh: np.ndarray, box: tuple[float, float, float, float],
    person: np.ndarray | None,
) -> FaceAnalysis:
    """Parse one face with FaRL, aligned by its face mesh (478 points, kept as `landmarks`)."""
    import torch

    points5 = five_points(mesh)

    h, w = rgb.shape[:2]
    images = torch.from_numpy(np.ascontiguousarray(rgb)).permute(2, 0, 1)[None].to(models.device)  # (1, 3, H, W)
    with torch.inference_mode():
        seg = models.parser(images, _facer_data(points5, box, models.device))["seg"]
        pred = seg["logits"].argmax(dim=1)[0].cpu().numpy()
        landmarks = models.aligner(images, _facer_data(points5, box, models.device))["alignment"][0].cpu().numpy()
    labels = np.zeros((h, w), np.uint8)
    # Sided parts go to image-left/right by which side of the face's midline they are on.
    eye_axis = points5[1] - points5[0]
    mid = (points5[0] + points5[1]) / 2
    ys, xs = np.arange(h)[:, None], np.arange(w)[None, :]
    on_left = ((xs - mid[0]) * eye_axis[0] + (ys - mid[1]) * eye_axis[1]) < 0
    for i, name in enumerate(seg["label_names"]):
        ours = FARL_TO_LABEL.get(name, "skin")
        where = pred == i
        if ours in ("brow", "eye"):
            labels[where & on_left] = LABEL_INDEX[f"left_{ours}"]
            labels[where & ~on_left] = LABEL_INDEX[f"right_{ours}"]
        else:
            labels[where] = LABEL_INDEX[ours]

    eyes = sorted((landmarks[list(idx)] for idx in WFLW_EYES), key=lambda c: c[:, 0].mean())
    pupils = sorted((landmarks[i] for i in WFLW_PUPILS), key=lambda p: p[0])
    widths = [np.ptp(e[:, 0]) for e in eyes]
    foreground = labels != LABEL_INDEX["background"]
    if person is not None:
        foreground |= person
    return FaceAnalysis(
        labels=labels,
        iris=np.array(pupils, np.float32),
        iris_radius=np.array([0.2 * wd for wd in widths], np.float32),  # WFLW has no iris rim
        eye_points=np.concatenate(eyes).astype(np.float32),
        box=box,
        foreground=foreground,
        landmarks=mesh.astype(np.float32),
        backend_points=landmarks.astype(np.float32),
        backend="farl",
    )
