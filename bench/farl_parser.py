"""The FaRL parser path for driving videos next to the mesh path on this CPU: ms per frame
(facer's loading, warps and heatmap decoding included), peak memory, and how closely the two
parsers' maps agree (per-part IoU) — the number that says whether a model trained on one
parser's maps can be driven by the other's.

Usage: python bench/farl_parser.py [VIDEO] [--frames 3] [--mesh-frames 48] [--iou-frames 48]

The real FaRL weights download from GitHub. If they are in $VIVID_FARL_DIR or torch's hub
cache they are used. Otherwise stand-ins of the real size are written, under the real file
names, to a temporary folder that $VIVID_FARL_DIR then points at, and loaded through
`FarlModels.load` by facer's own classes: the parser is a traced ViT-B/16 FaRL backbone at
448 px + UPerNet head (768 channels, 11 LaPa classes, 512 px logits: FaRL's LaPa config), the
aligner a traced UPerNet heatmap head (98 WFLW points) with the backbone's state dict in the
jit's extra files (facer's own recipe, farl.py `__main__`). Their weights are random, so
their maps mean nothing: the FaRL-vs-mesh IoU is then reported as n/a, never computed. What
is measured either way is the mesh-to-mesh round trip through `part_warp.warp_parts`, which
every FaRL map goes through (raw mesh -> smoothed mesh) and which bounds what the warp alone
costs in agreement.
"""
from __future__ import annotations

import argparse
import io
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.face_tracking import bare_mesh  # noqa: E402
from bench.results import record  # noqa: E402

SHARED = ROOT.parent / "shared" / "data" / "driving"
DEFAULT_CLIP = SHARED / "d3.mp4"
#: Parts compared between maps; left and right are pooled.
PARTS = {
    "brows": ("left_brow", "right_brow"),
    "eyes": ("left_eye", "right_eye"),
    "nose": ("nose",),
    "upper lip": ("upper_lip",),
    "inner mouth": ("inner_mouth",),
    "lower lip": ("lower_lip",),
}
HEAD_CHANNELS = 768  # FaRL's face parsing and alignment heads (head_channel in FaRL's configs)
PARSER_OUT_SIZE = 512  # FaRL's FaceParsingTransformer out_size


# -- real-size stand-ins ------------------------------------------------------------------
def _uper_head(num_classes: int):
    """UPerNet head with mmseg's UPerHead layout (pyramid pooling on the top level, FPN,
    3x3 fusion, 1x1 classifier; conv-BN-ReLU units), in plain torch because facer's
    MMSEG_UPerHead needs mmseg, which is not installed (and not needed by the real jits)."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    def unit(c_in: int, c_out: int, k: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())

    class UPerHead(nn.Module):
        def __init__(self, channels: int = HEAD_CHANNELS, levels: int = 4, pool_scales=(1, 2, 3, 6)):
            super().__init__()
            self.pool_scales = pool_scales
            self.ppm = nn.ModuleList(unit(channels, channels, 1) for _ in pool_scales)
            self.bottleneck = unit(channels * (1 + len(pool_scales)), channels, 3)
            self.lateral = nn.ModuleList(unit(channels, channels, 1) for _ in range(levels - 1))
            self.fpn = nn.ModuleList(unit(channels, channels, 3) for _ in range(levels - 1))
            self.fuse = unit(levels * channels, channels, 3)
            self.classify = nn.Conv2d(channels, num_classes, 1)

        def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
            def up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
                return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)

            top = feats[-1]  # (B, C, 14, 14) at 448 px
            pooled = [up(m(F.adaptive_avg_pool2d(top, s)), top) for s, m in zip(self.pool_scales, self.ppm)]
            lat = [m(f) for m, f in zip(self.lateral, feats[:-1])] + [self.bottleneck(torch.cat([top, *pooled], 1))]
            for i in range(len(lat) - 1, 0, -1):
                lat[i - 1] = lat[i - 1] + up(lat[i], lat[i - 1])
            outs = [m(x) for m, x in zip(self.fpn, lat[:-1])] + [lat[-1]]
            outs = [outs[0]] + [up(o, outs[0]) for o in outs[1:]]  # all at 112 x 112
            return self.classify(self.fuse(torch.cat(outs, 1)))

    return UPerHead().eval()


def write_standins(folder: Path) -> None:
    """Random-weight FaRL parser (LaPa) and aligner (WFLW) of the real size and format,
    under the file names facer and `FarlModels.load` expect."""
    import torch
    from facer.face_alignment.network import FaRLVisualFeatures
    from torch.nn import functional as F

    from vivid.face.farl_backend import ALIGNER_FILE, PARSER_FILES

    torch.manual_seed(0)

    class Parser(torch.nn.Module):
        """FaRL's FaceParsingTransformer: features -> UPerNet -> logits at out_size."""

        def __init__(self):
            super().__init__()
            self.backbone = FaRLVisualFeatures("base", None, forced_input_resolution=448)
            self.head = _uper_head(11)

        def forward(self, image: torch.Tensor):
            features, _ = self.backbone(image)
            logits = F.interpolate(self.head(features), size=(PARSER_OUT_SIZE, PARSER_OUT_SIZE), mode="bilinear",
                                   align_corners=False)
            return logits, logits

    with torch.no_grad():
        parser = Parser().eval()
        traced = torch.jit.trace(parser, torch.rand(1, 3, 448, 448), check_trace=False)
        torch.jit.save(traced, str(folder / PARSER_FILES["lapa/448"]))
        del parser, traced

        backbone = FaRLVisualFeatures("base", None, forced_input_resolution=448, output_indices=None).eval()
        head = _uper_head(98)
        features = [torch.rand(1, HEAD_CHANNELS, s, s) for s in (112, 56, 28, 14)]
        traced = torch.jit.trace(head, (features,), check_trace=False)
        buffer = io.BytesIO()
        torch.save(backbone.state_dict(), buffer)
        torch.jit.save(traced, str(folder / ALIGNER_FILE), _extra_files={"backbone": buffer.getvalue()})


def real_weights_dir() -> Path | None:
    """A folder holding the real FaRL files: $VIVID_FARL_DIR, else torch's hub cache."""
    import torch

    from vivid.face.farl_backend import ALIGNER_FILE, PARSER_FILES

    places = [Path(os.environ["VIVID_FARL_DIR"])] if os.environ.get("VIVID_FARL_DIR") else []
    places.append(Path(torch.hub.get_dir()) / "checkpoints")
    for folder in places:
        if (folder / PARSER_FILES["lapa/448"]).is_file() and (folder / ALIGNER_FILE).is_file():
            return folder
    return None


# -- timing --------------------------------------------------------------------------------
@dataclass
class Clock:
    """Seconds spent inside wrapped calls, by name."""

    seconds: dict[str, float] = field(default_factory=dict)

    def wrap(self, name: str, fn):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start

        return timed


def timed_models(models, clock: Clock):
    """`models` with the facer calls and the networks inside them timed separately."""
    import torch

    class TimedNet(torch.nn.Module):
        def __init__(self, net, name: str):
            super().__init__()
            self.net, self.timed = net, clock.wrap(name, net)

        def forward(self, *args):
            return self.timed(*args)

    models.parser.net = TimedNet(models.parser.net, "parser network")
    models.aligner.net = TimedNet(models.aligner.net, "aligner network")
    return type(models)(clock.wrap("parser call", models.parser), clock.wrap("aligner call", models.aligner))


def track_and_render(analyzer, frames: list[np.ndarray], fps: float) -> tuple[float, list]:
    """Seconds for our driving path (tracking, gap filling, smoothing, the parser's map,
    motion map), and the analyses."""
    from vivid.face import TrackConfig, render_motion_map

    start = time.perf_counter()
    out = []
    for a in analyzer.iter_track(frames, TrackConfig(fps=fps)):
        if a is not None:
            render_motion_map(a)
        out.append(a)
    return time.perf_counter() - start, out


def reset_peak_memory() -> None:
    """Start a new peak-RSS (VmHWM) period for this process (Linux)."""
    Path("/proc/self/clear_refs").write_text("5")


def memory_mb() -> tuple[float, float]:
    """(current RSS, peak RSS since the last reset) of this process in MB."""
    status = Path("/proc/self/status").read_text()
    rss, hwm = (int(re.search(rf"{k}:\s+(\d+)", status).group(1)) / 1024 for k in ("VmRSS", "VmHWM"))
    return rss, hwm


# -- agreement -------------------------------------------------------------------------------
def part_counts(a: np.ndarray, b: np.ndarray) -> dict[str, tuple[int, int]]:
    """Per part: (|A & B|, |A | B|) pixels of two label maps, left and right pooled."""
    from vivid.face import label_mask

    out = {}
    for part, names in PARTS.items():
        ma, mb = label_mask(a, *names), label_mask(b, *names)
        out[part] = (int((ma & mb).sum()), int((ma | mb).sum()))
    return out


def pooled_iou(pairs: list[tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """Per-part IoU over all frames (intersections and unions summed over the frames, so a
    frame where the part is absent from both, like a closed mouth, does not count)."""
    inter = {p: 0 for p in PARTS}
    union = {p: 0 for p in PARTS}
    for a, b in pairs:
        for part, (i, u) in part_counts(a, b).items():
            inter[part] += i
            union[part] += u
    return {p: inter[p] / union[p] if union[p] else float("nan") for p in PARTS}


def warp_round_trip(video: Path, frames: int) -> tuple[dict[str, float], dict[str, float], float, int]:
    """Mesh maps at the smoothed mesh vs (a) mesh maps of the raw mesh moved onto the smoothed
    one by `warp_parts` (what every FaRL map goes through) and (b) the raw mesh's maps left
    where they are (no warp). Returns both IoUs, the mean raw-to-smoothed point shift in px,
    and the number of frames."""
    from vivid.face import FaceAnalyzer, TrackConfig
    from vivid.face.part_warp import warp_parts
    from vivid.media import probe_video, read_video

    fps = probe_video(video).fps
    clip = list(read_video(video, max_frames=frames))
    analyzer = FaceAnalyzer("mesh", segment=False)
    raw = analyzer.track(clip, TrackConfig(fps=fps, smoothing=None))
    smooth = analyzer.track(clip, TrackConfig(fps=fps))
    warped, still, shifts = [], [], []
    for r, s in zip(raw, smooth):
        if r is None or s is None or r.interpolated:
            continue
        moved = warp_parts(r, r.landmarks, s.landmarks, s.shape)
        warped.append((moved.labels, s.labels))
        still.append((r.labels, s.labels))
        shifts.append(float(np.linalg.norm(r.landmarks - s.landmarks, axis=1).mean()))
    return pooled_iou(warped), pooled_iou(still), float(np.mean(shifts)), len(warped)


def farl_vs_mesh(farl_models, video: Path, frames: int) -> tuple[dict[str, float], int]:
    """Per-part IoU of the FaRL path's maps against the mesh path's (same smoothed mesh)."""
    from vivid.face import FaceAnalyzer, TrackConfig
    from vivid.media import probe_video, read_video

    fps = probe_video(video).fps
    clip = list(read_video(video, max_frames=frames))
    config = TrackConfig(fps=fps)
    farl = FaceAnalyzer("farl", farl_models=farl_models, segment=False).track(clip, config)
    mesh = FaceAnalyzer("mesh", segment=False).track(clip, config)
    pairs = [(f.labels, m.labels) for f, m in zip(farl, mesh) if f is not None and m is not None]
    return pooled_iou(pairs), len(pairs)


def iou_table(rows: dict[str, dict[str, float]], counts: dict[str, str]) -> str:
    head = "| clip | frames | " + " | ".join(PARTS) + " | mean |\n|---|---|" + "---|" * (len(PARTS) + 1) + "\n"
    lines = []
    for clip, ious in rows.items():
        vals = [ious[p] for p in PARTS]
        lines.append(f"| {clip} | {counts[clip]} | " + " | ".join(f"{v:.3f}" for v in vals)
                     + f" | {np.nanmean(vals):.3f} |")
    per_part = {p: np.nanmean([r[p] for r in rows.values()]) for p in PARTS}
    lines.append("| **mean over clips** | | " + " | ".join(f"{per_part[p]:.3f}" for p in PARTS)
                 + f" | {np.nanmean(list(per_part.values())):.3f} |")
    return head + "\n".join(lines) + "\n"


# -- main ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("video", nargs="?", default=str(DEFAULT_CLIP), help="timing clip (default ../shared/data d3.mp4)")
    parser.add_argument("--frames", type=int, default=3, help="frames through the FaRL path (tens of s each here)")
    parser.add_argument("--mesh-frames", type=int, default=48, help="frames for the two mesh timings (best of 3)")
    parser.add_argument("--iou-frames", type=int, default=48, help="frames per sample clip for the IoU figures")
    parser.add_argument("--no-record", action="store_true", help="print only; leave bench/RESULTS.md alone")
    parser.add_argument("--write-standins", metavar="DIR", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_standins:
        write_standins(Path(args.write_standins))
        return
    video = Path(args.video)
    if not video.is_file():
        print(f"skipped: {video} not present (sample clips live in ../shared/data)")
        return

    import torch

    from vivid.face import FaceAnalyzer
    from vivid.face.farl_backend import ALIGNER_FILE, PARSER_FILES, FarlModels
    from vivid.media import probe_video, read_video

    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    fps = probe_video(video).fps
    clip = list(read_video(video, max_frames=max(args.frames, args.mesh_frames)))
    h, w = clip[0].shape[:2]
    mesh_clip, farl_clip = clip[: args.mesh_frames], clip[: args.frames]
    files = f"{PARSER_FILES['lapa/448']} and {ALIGNER_FILE}"

    # Mesh paths first (small memory), then the FaRL path with its own peak-memory period.
    bare = min(bare_mesh(mesh_clip) for _ in range(3)) / len(mesh_clip)
    mesh_analyzer = FaceAnalyzer("mesh", segment=False)
    ours_mesh = min(track_and_render(mesh_analyzer, mesh_clip, fps)[0] for _ in range(3)) / len(mesh_clip)

    real = real_weights_dir()
    tmp = None
    if real is None:
        tmp = tempfile.TemporaryDirectory(prefix="farl-standins-")
        t0 = time.perf_counter()
        # In a child process, so this process's memory figures are those of a mesh-only run.
        subprocess.run([sys.executable, __file__, "--write-standins", tmp.name], check=True)
        print(f"wrote real-size random stand-ins in {time.perf_counter() - t0:.0f} s")
        os.environ["VIVID_FARL_DIR"] = tmp.name
    else:
        os.environ["VIVID_FARL_DIR"] = str(real)
    weights = f"real FaRL weights from {real}" if real else "real-size random stand-ins (no real weights on disk)"
    print("FaRL weights:", weights)

    reset_peak_memory()
    rss_start, _ = memory_mb()
    t0 = time.perf_counter()
    models = FarlModels.load("lapa/448")
    load_s = time.perf_counter() - t0
    rss_loaded, _ = memory_mb()
    clock = Clock()
    farl_analyzer = FaceAnalyzer("farl", farl_models=timed_models(models, clock), segment=False)
    farl_s, farl_track = track_and_render(farl_analyzer, farl_clip, fps)
    _, peak = memory_mb()
    parsed = sum(a is not None and a.backend == "farl" for a in farl_track)
    assert parsed == len(farl_clip), f"only {parsed} of {len(farl_clip)} frames went through FaRL"
    farl = farl_s / len(farl_clip)
    sec = clock.seconds
    n = len(farl_clip)
    parts = {
        "FaRL parser network (ViT-B/16 + UPerNet, 448 px)": sec["parser network"],
        "FaRL aligner network (ViT-B/16 + UPerNet heatmaps, 448 px)": sec["aligner network"],
        "facer around the networks (warps, inverse warps, heatmap decoding)":
            sec["parser call"] + sec["aligner call"] - sec["parser network"] - sec["aligner network"],
        "ours around facer (mesh, label mapping, part warp, smoothing, motion map)": farl_s - sec["parser call"] - sec["aligner call"],
    }
    load1 = os.getloadavg()[0]

    body = f"""FaRL weights: {weights}. Timing clip {video.name} ({w}x{h}); torch threads = {cores} (the
machine's cores); 1-min load average at the end {load1:.1f} on {cores} cores (other work was running,
all three paths measured in this same run under it).

| path | frames | ms/frame | x bare mesh |
|---|---|---|---|
| MediaPipe face mesh alone (tracking mode, irises; best of 3) | {len(mesh_clip)} | {1000 * bare:.1f} | 1.00 |
| ours, mesh parser: iter_track + render_motion_map (best of 3) | {len(mesh_clip)} | {1000 * ours_mesh:.1f} | {ours_mesh / bare:.2f} |
| ours, FaRL parser: iter_track with FaRL + render_motion_map (one pass) | {n} | {1000 * farl:.0f} | {farl / bare:.0f} |

Where a FaRL frame's time goes (ms/frame):

| part | ms/frame | share |
|---|---|---|
""" + "\n".join(f"| {k} | {1000 * v / n:.0f} | {100 * v / farl_s:.0f}% |" for k, v in parts.items()) + f"""

FaRL memory: RSS {rss_start:.0f} MB before loading, {rss_loaded:.0f} MB with both models loaded
(load {load_s:.0f} s), peak {peak:.0f} MB while tracking (VmHWM, reset before loading), i.e.
{peak - rss_start:.0f} MB more than the mesh-only process.
"""

    # Agreement of the two parsers' maps, and the warp's own cost in agreement.
    clips = sorted(SHARED.glob("d*.mp4"), key=lambda p: int(p.stem[1:])) if SHARED.is_dir() else [video]
    trip, still, frames_used, shifts = {}, {}, {}, []
    for c in clips:
        trip[c.name], still[c.name], shift, used = warp_round_trip(c, args.iou_frames)
        frames_used[c.name] = str(used)
        shifts.append(shift)
    if real:
        ious, counts = {}, {}
        for c in clips:
            ious[c.name], k = farl_vs_mesh(models, c, args.iou_frames)
            counts[c.name] = str(k)
        farl_iou = "Per-part IoU, FaRL maps vs mesh maps (same smoothed mesh):\n\n" + iou_table(ious, counts)
    else:
        farl_iou = (f"Per-part IoU, FaRL maps vs mesh maps: **n/a (needs the FaRL weights: put {files} in "
                    f"$VIVID_FARL_DIR)** — random stand-in weights give meaningless maps, so no number is reported.\n")
    print(farl_iou)
    body += f"""
{farl_iou}
Sanity figure (meaningful without FaRL): the warp every FaRL map goes through. Mesh maps drawn
at the smoothed mesh vs mesh maps of the raw mesh moved onto the smoothed mesh by
`part_warp.warp_parts` (per-part IoU, intersections and unions pooled over frames and sides;
first {args.iou_frames} frames of each clip, filled-in frames skipped). Even a FaRL parse identical
to the mesh's on every raw frame would agree with the mesh maps only this well after the warp;
the "no warp" table (raw mesh's maps left where they are) shows what the warp recovers. Mean
raw-to-smoothed point shift: {np.mean(shifts):.2f} px.

Round trip through warp_parts:

{iou_table(trip, frames_used)}
No warp (raw-mesh maps vs smoothed-mesh maps):

{iou_table(still, frames_used)}"""
    if not real:
        body += """
Stand-ins: ViT-B/16 FaRL backbone (facer's FaRLVisualFeatures, 448 px) + UPerNet head with
mmseg's UPerHead layout written in plain torch (mmseg is not installed), 768 channels, LaPa's 11
classes, logits at 512 px (FaRL's LaPa config); aligner: the same head with 98 WFLW heatmaps,
traced, backbone state dict in the jit's extra files, loaded by facer's FaRLFaceAlignment.
"""
    if args.no_record:
        print(body)
    else:
        record("FaRL parser path (driving frames)", body)
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
