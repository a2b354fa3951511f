"""Metrics that need trained networks: LPIPS, dlib's face embedding, and the paper's
ArcFace / Deep3DFaceRecon / Q-Align, each available only when its weights are.

A metric that cannot run says why and how to get it (`Unavailable.note`); the table then
shows `n/a (needs ...)`, never a substitute number.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

#: torchvision's ImageNet AlexNet checkpoint, the backbone LPIPS (v0.1, "alex") is built on.
ALEXNET_FILE = "alexnet-owt-7be5be79.pth"


@dataclass(frozen=True)
class MetricWeights:
    """Where the networks of the learned metrics come from."""

    lpips_backbone: Path | None = None  # AlexNet checkpoint; None: torch's hub cache if it has one
    download: bool = False  # let torchvision download the AlexNet backbone when online


@dataclass(frozen=True)
class Unavailable:
    """A metric that cannot be computed here: `need` is short (table cell), `how` says how to get it."""

    need: str
    how: str

    @property
    def cell(self) -> str:
        return f"n/a (needs {self.need})"


#: The paper's metrics we have no runner or weights for on this machine.
ARCFACE = Unavailable(
    "ArcFace weights",
    "the paper's identity score is the cosine of ArcFace embeddings (e.g. insightface's "
    "buffalo_l w600k_r50); no ArcFace runner is wired into the harness yet. The offline "
    "identity column (dlib) stands beside it.",
)
DEEP3D = Unavailable(
    "Deep3DFaceRecon + BFM",
    "the paper's expression error is the L1 distance of Deep3DFaceRecon_pytorch expression "
    "coefficients; it needs that network's checkpoint and the Basel Face Model (registration "
    "required). The offline mesh expression error stands beside it.",
)
QALIGN = Unavailable(
    "Q-Align weights",
    "image quality in the paper is Q-Align (q-future/one-align, a 7B multimodal model, ~16 GB, "
    "needs a GPU; `pip install pyiqa` then pyiqa.create_metric('qalign')). Not run here.",
)


class Lpips:
    """LPIPS (Zhang et al. 2018, AlexNet, v0.1) from the `lpips` package. The package ships
    the linear heads; the AlexNet backbone comes from MetricWeights."""

    def __init__(self, weights: MetricWeights):
        import lpips
        import torch
        import torchvision

        self.model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False).eval()
        backbone = weights.lpips_backbone or Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
        alexnet = torchvision.models.alexnet()
        if Path(backbone).is_file():
            alexnet.load_state_dict(torch.load(backbone, map_location="cpu", weights_only=True), strict=True)
        else:  # only reached with download=True (see lpips_status)
            alexnet = torchvision.models.alexnet(weights="IMAGENET1K_V1")
        for name, module in self.model.net.named_children():  # slices keep AlexNet's layer indices
            for index, layer in module.named_children():
                layer.load_state_dict(alexnet.features[int(index)].state_dict())
        self._torch = torch

    def __call__(self, truth: np.ndarray, output: np.ndarray) -> float:
        """LPIPS distance of two RGB uint8 images (0 = identical)."""
        t = self._torch
        batch = t.from_numpy(np.stack([truth, output])).permute(0, 3, 1, 2).float() / 127.5 - 1
        with t.no_grad():
            return float(self.model(batch[:1], batch[1:]).item())


def lpips_status(weights: MetricWeights) -> Unavailable | None:
    """Why LPIPS cannot run (None: it can)."""
    if importlib.util.find_spec("lpips") is None:
        return Unavailable("the lpips package", "pip install lpips==0.1.4")
    import torch

    backbone = weights.lpips_backbone or Path(torch.hub.get_dir()) / "checkpoints" / ALEXNET_FILE
    if weights.lpips_backbone is not None and not Path(backbone).is_file():
        return Unavailable("AlexNet weights", f"--lpips-backbone {backbone} does not exist")
    if not Path(backbone).is_file() and not weights.download:
        return Unavailable(
            "AlexNet weights",
            f"LPIPS' backbone is torchvision's ImageNet AlexNet: put {ALEXNET_FILE} in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'} or pass --lpips-backbone FILE, or add "
            "--download-metric-weights when online",
        )
    return None


def _dlib_models() -> tuple[Path, Path] | None:
    """The 5-point shape predictor and face-embedding network of face_recognition_models."""
    if importlib.util.find_spec("dlib") is None:
        return None
    spec = importlib.util.find_spec("face_recognition_models")  # not imported: it needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    files = folder / "shape_predictor_5_face_landmarks.dat", folder / "dlib_face_recognition_resnet_model_v1.dat"
    return files if all(f.is_file() for f in files) else None


def dlib_status() -> Unavailable | None:
    """Why the dlib identity embedding cannot run (None: it can)."""
    if _dlib_models() is None:
        return Unavailable("dlib", "pip install dlib-bin==20.0.1.post1 face_recognition_models==0.3.0")
    return None


class DlibIdentity:
    """dlib's 128-D face embedding (ResNet, 99.38% on LFW) as an offline identity measure:
    faces aligned by dlib's 5-point predictor inside the face box the mesh found."""

    def __init__(self) -> None:
        import dlib

        models = _dlib_models()
        if models is None:
            raise RuntimeError(dlib_status().how)  # type: ignore[union-attr]
        self._dlib = dlib
        self._shape = dlib.shape_predictor(str(models[0]))
        self._net = dlib.face_recognition_model_v1(str(models[1]))

    def embed(self, rgb: np.ndarray, box: tuple[float, float, float, float]) -> np.ndarray:
        """The 128-D embedding of the face in `box` (x0, y0, x1, y1; e.g. the mesh's box)."""
        x0, y0, x1, y1 = box
        # dlib's detector boxes run from the brows to the chin: drop the mesh's forehead.
        top = y0 + 0.22 * (y1 - y0)
        rect = self._dlib.rectangle(int(round(x0)), int(round(top)), int(round(x1)), int(round(y1)))
        image = np.ascontiguousarray(rgb)
        shape = self._shape(image, rect)
        return np.asarray(self._net.compute_face_descriptor(image, shape), np.float64)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-12))
