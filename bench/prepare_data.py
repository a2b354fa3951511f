"""Training-data preparation: disk per hour of video, preparation speed, and reading speed of
prepared clips next to the source H.264 files they came from.

    python bench/prepare_data.py [--resolution 512] [--hd-frames 150]

Prepares every clip of ../shared/data/driving (one process), then times random reads: one
frame and one 24-frame run from the prepared clips, and the same frames decoded from the
source mp4 by seeking (the baseline a loader without preparation would have). With
--hd-frames N it also prepares a 1920x1080 version of d3.mp4 (N frames) to show the cost per
frame at a common source size.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.results import record  # noqa: E402
from vivid.media import read_video, write_video  # noqa: E402
from vivid.training.clip_maker import ClipMaker, PrepareConfig  # noqa: E402
from vivid.training.clips import PreparedClip  # noqa: E402
from vivid.training.prepare import find_sources  # noqa: E402

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "data" / "driving"


def prepare_timed(maker: ClipMaker, videos: list[Path], out: Path) -> dict:
    """Prepare each video with ClipMaker's two passes timed apart."""
    totals = {"track": 0.0, "write": 0.0, "clip_frames": 0, "source_seconds": 0.0, "clips": []}
    for source in find_sources(videos):
        start = time.perf_counter()
        track = maker.track(source.path)
        middle = time.perf_counter()
        plans, rejected = maker.plan(track, source.id, str(source.path))
        maker.write(source.path, track, plans, out, str(source.path))
        totals["track"] += middle - start
        totals["write"] += time.perf_counter() - middle
        totals["clip_frames"] += len(track)
        totals["source_seconds"] += track.source_frames_read / track.source_rate
        totals["clips"] += [(out / p.clip_id, source.path, track.source_index[p.first:p.end]) for p in plans]
        if rejected:
            print(f"{source.path.name}: rejected {[r['reason'] for r in rejected]}")
    return totals


def seek_decode(path: Path, first: int, count: int, fps: float) -> list[np.ndarray]:
    """Frames first..first+count-1 of an mp4, by seeking to the keyframe before and decoding on."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        target = int(first / fps / stream.time_base)
        container.seek(target, stream=stream, backward=True)
        out = []
        for frame in container.decode(stream):
            if frame.pts is not None and frame.pts < target - 1:
                continue
            out.append(frame.to_ndarray(format="rgb24"))
            if len(out) == count:
                break
        return out


def read_speed(clips: list[tuple[Path, Path, list[int]]], run: int, picks: int = 40) -> tuple[float, float]:
    """ms per random read of `run` frames from prepared clips, and from the source mp4s."""
    rng = np.random.default_rng(0)
    opened = [(PreparedClip(folder), src, idx) for folder, src, idx in clips]
    chosen = []
    for _ in range(picks):
        clip, src, idx = opened[rng.integers(len(opened))]
        first = int(rng.integers(0, len(clip) - run + 1))
        chosen.append((clip, src, first, idx[first]))
    start = time.perf_counter()
    for clip, _, first, _ in chosen:
        clip.frames(range(first, first + run))
    prepared = (time.perf_counter() - start) / picks * 1000
    start = time.perf_counter()
    for _, src, _, source_first in chosen:
        import av

        with av.open(str(src)) as c:
            fps = float(c.streams.video[0].average_rate)
        seek_decode(src, source_first, run, fps)
    source = (time.perf_counter() - start) / picks * 1000
    return prepared, source


def folder_bytes(folders: list[Path], name: str) -> int:
    return sum((f / name).stat().st_size for f in folders)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--resolution", type=int, default=512)
    parser.add_argument("--hd-frames", type=int, default=150, help="0 skips the 1920x1080 run")
    args = parser.parse_args()
    if not SAMPLES.is_dir():
        sys.exit(f"{SAMPLES} not present")
    videos = sorted(SAMPLES.glob("*.mp4"))
    maker = ClipMaker(PrepareConfig(resolution=args.resolution))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clips"
        t = prepare_timed(maker, videos, out)
        folders = [c[0] for c in t["clips"]]
        hours = t["clip_frames"] / 25 / 3600
        frames_gb = folder_bytes(folders, "frames.bin") / 1e9
        arrays_gb = folder_bytes(folders, "clip.npz") / 1e9
        source_gb = sum(v.stat().st_size for v in videos) / 1e9
        one = read_speed(t["clips"], 1)
        run = read_speed(t["clips"], 24)
        n = t["clip_frames"]
        hd_rows = ""
        if args.hd_frames:
            hd = Path(tmp) / "hd" / "d3_1080p.mp4"
            hd.parent.mkdir()
            frames = (cv2.copyMakeBorder(cv2.resize(f, (1080, 1080), interpolation=cv2.INTER_CUBIC), 0, 0, 420, 420,
                                         cv2.BORDER_REFLECT) for f in read_video(SAMPLES / "d3.mp4", args.hd_frames))
            write_video(hd, frames, 30)
            h = prepare_timed(maker, [hd], Path(tmp) / "hd_clips")
            hd_rows = (f"| d3 upscaled to 1920x1080, {args.hd_frames} frames | {h['clip_frames']} | "
                       f"{h['track'] / h['clip_frames'] * 1000:.1f} | {h['write'] / h['clip_frames'] * 1000:.1f} |\n")
    maker.close()
    body = f"""
Prepared all seven sample clips ({len(videos)} videos, {t['source_seconds']:.0f} s of video) at
{args.resolution} px, 25 fps, one process; {len(folders)} clips, {n} clip frames.

| disk | GB per hour of clips |
|---|---|
| frames.bin (JPEG q95) | {frames_gb / hours:.2f} |
| clip.npz (landmarks, masks, ...) | {arrays_gb / hours:.2f} |
| **prepared total** | **{(frames_gb + arrays_gb) / hours:.2f}** |
| baseline: the source H.264 mp4s (per hour of source) | {source_gb / (t['source_seconds'] / 3600):.2f} |

| preparation, ms per clip frame | pass 1: decode + track + checks | pass 2: decode + crop + JPEG + masks |
|---|---|---|
| sample clips (480-512 px sources) | {t['track'] / n * 1000:.1f} | {t['write'] / n * 1000:.1f} |

{"| 1080p source | clip frames | pass 1 ms/frame | pass 2 ms/frame |" + chr(10) + "|---|---|---|---|" + chr(10) + hd_rows if hd_rows else ""}
| random read, ms | prepared clip | baseline: seek + decode the source mp4 |
|---|---|---|
| one frame | {one[0]:.1f} | {one[1]:.1f} |
| 24-frame run | {run[0]:.1f} | {run[1]:.1f} |
"""
    record("Training data preparation", body)


if __name__ == "__main__":
    main()
