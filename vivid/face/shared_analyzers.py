"""One face analyser per setting for the whole process, shared by every job it runs.

An analyser holds MediaPipe graphs (~40 MB of native memory each) and, with the FaRL parser,
two ViT-B networks: one per job would keep them after the job. Their `analyze` is locked and
each video's tracking makes and closes its own runner, so threads may share them.

- `mesh_analyzer()`: the face mesh without person segmentation, for what needs the mesh alone:
  the preview engine's tracking and the animation job's fail-fast face checks (every parser
  finds faces with the same mesh; without segmentation a look takes 5 ms instead of 12-20).
- `parsing_analyzer(parser)`: full analyses (parsing map, eyes, person mask) with a parser;
  a diffusion model hosted for many jobs draws its motion maps with the one for its setting
  (`vivid.model_host`), so a view of the parsing shows what drives that model.
"""
from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from .analyzer import FaceAnalyzer

log = logging.getLogger(__name__)

_analyzers: dict[tuple[str, bool], FaceAnalyzer] = {}
_lock = threading.Lock()


def _shared(parser: str, segment: bool) -> FaceAnalyzer:
    with _lock:
        if (parser, segment) not in _analyzers:
            _analyzers[parser, segment] = FaceAnalyzer(parser, segment=segment)
        return _analyzers[parser, segment]


def mesh_analyzer() -> FaceAnalyzer:
    """The process's face-mesh analyser without person segmentation."""
    return _shared("mesh", False)


def parsing_analyzer(parser: str = "auto") -> FaceAnalyzer:
    """The process's analyser for the face parser setting `parser` ("auto", "mesh" or "farl")."""
    return _shared(parser, True)


def warm_up(portrait: str | Path, parser: str = "auto") -> bool:
    """Build the mesh analyser and the one for `parser` and run each once, so a server's first
    visitor does not pay for it: making a parsing analyser imports torch (~1.3 s here), and
    MediaPipe loads its graphs on its first image. False (and a warning) when the portrait
    cannot be read or shows no face: that only costs the first visitor time."""
    from ..errors import InputError
    from ..media import load_image
    from .analysis import NoFaceError

    t0 = time.monotonic()
    try:
        rgb = load_image(portrait).rgb
        mesh_analyzer().analyze(rgb, "the warm-up portrait")
        parsing_analyzer(parser).analyze(rgb, "the warm-up portrait")
    except (OSError, InputError, NoFaceError) as exc:
        log.warning("warm-up skipped: %s", exc)
        return False
    log.info("face analysers ready in %.1f s", time.monotonic() - t0)
    return True


__all__ = ["mesh_analyzer", "parsing_analyzer", "warm_up"]
