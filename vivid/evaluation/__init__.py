"""Evaluation: `python -m vivid evaluate` and its parts (DESIGN.md, method point 7).

Runs each engine on self-reenactment clips (first frame = reference, compared with the real
frames) and cross-reenactment pairs (every portrait with every driving clip), and writes to
DIR: `table.md` (the paper's Table 1 layout, then offline columns), `per_clip.csv`,
`per_frame.csv`, `plots/`, `cases.json`, and the scored videos `videos/ENGINE/CASE.mp4`,
`videos/gt/CASE.mp4` (real crops), `videos/driving/CASE.mp4`, `videos/reference/CASE.png`
(lossless, frame for frame what was scored) and `videos/side_by_side/CASE.mp4`.

Modules: `protocol` (cases and the scoring crop), `engines` (`vivid.engines`' engines,
built from the options, and their timing), `face_geometry` (offline
mesh measures), `pixel_metrics`, `learned_metrics` (LPIPS, dlib, and what the paper's
ArcFace / Deep3DFaceRecon / Q-Align need), `scoring` (scores from saved videos),
`report`, `harness` (the run), `command` (CLI options).
"""
from __future__ import annotations

import importlib

#: Public names and the module each lives in (imported on first use, so building the CLI's
#: parser does not load scikit-image, torch or MediaPipe).
_EXPORTS = {
    "ENGINE_NAMES": "engines", "Sampling": "engines", "Engine": "engines", "FunctionEngine": "engines",
    "EvaluationConfig": "harness", "evaluate": "harness", "MetricWeights": "learned_metrics",
    "EvaluationError": "protocol", "CaseScores": "scoring", "Scorers": "scoring", "rescore": "scoring",
    "score_saved_videos": "scoring",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(name)
