"""VividPortraits in the browser. Widgets and callbacks only; the work happens in `vivid`."""
from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np

from vivid.face import FaceAnalyzer, NoFaceError, colorize, render_motion_map
from vivid.media import InputError, load_image, probe_video, read_video, write_video

log = logging.getLogger("vivid.app")

#: Longest driving video the Parsing tab analyses (frames), to keep the page responsive.
PARSE_VIDEO_MAX_FRAMES = 900
_analyzer: FaceAnalyzer | None = None


def analyzer() -> FaceAnalyzer:
    global _analyzer
    if _analyzer is None:
        _analyzer = FaceAnalyzer("auto")
    return _analyzer


def overlay(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.55) -> np.ndarray:
    """The parsing map blended over the photo, background left as it is."""
    colour = colorize(labels).astype(np.float32)
    mix = rgb.astype(np.float32) * (1 - alpha) + colour * alpha
    out = np.where((labels > 0)[..., None], mix, rgb.astype(np.float32))
    return out.round().astype(np.uint8)


def mask_picture(rgb: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """Foreground kept, background greyed out: what CLIP sees as the two halves."""
    grey = np.full_like(rgb, 128)
    return np.where(foreground[..., None], rgb, grey)


def parse_image(path: str | None):
    if not path:
        raise gr.Error("Upload a portrait first.")
    try:
        rgb = load_image(path).rgb
        a = analyzer().analyze(rgb, Path(path).name)
    except (InputError, NoFaceError) as exc:
        raise gr.Error(str(exc)) from None
    info = f"Backend: {analyzer().backend_note}"
    if a.notes:
        info += "\n" + "\n".join(f"- {n}" for n in a.notes)
    return overlay(rgb, a.labels), render_motion_map(a), mask_picture(rgb, a.foreground), info


def parse_video(path: str | None, progress=gr.Progress()):
    if not path:
        raise gr.Error("Upload a driving video first.")
    try:
        info = probe_video(path)
        from vivid.face import TrackConfig

        total = min(info.frames or PARSE_VIDEO_MAX_FRAMES, PARSE_VIDEO_MAX_FRAMES)
        frames = read_video(path, max_frames=PARSE_VIDEO_MAX_FRAMES)
        out = Path(tempfile.mkdtemp(prefix="vivid_parse_")) / "motion_maps.mp4"
        missing: list[int] = []
        filled: list[int] = []

        def maps():
            blank = None
            tracked = analyzer().iter_track(frames, TrackConfig(fps=info.fps))
            for i, a in enumerate(progress.tqdm(tracked, total=total, desc="Tracking")):
                if a is None:
                    missing.append(i)
                    yield blank if blank is not None else np.zeros((info.height, info.width, 3), np.uint8)
                    continue
                if a.interpolated:
                    filled.append(i)
                m = render_motion_map(a)
                blank = np.zeros_like(m)
                yield m

        n = write_video(out, maps(), info.fps)
    except (InputError, NoFaceError) as exc:
        raise gr.Error(str(exc)) from None
    lines = [f"{n} frames at {info.fps:g} fps, backend: mesh (MediaPipe tracking)"]
    if n >= PARSE_VIDEO_MAX_FRAMES:
        lines.append(f"only the first {PARSE_VIDEO_MAX_FRAMES} frames were analysed")
    lines.append(f"Frames without a face: {_ranges(sorted(missing + filled)) or 'none'}")
    if filled:
        lines.append(f"  of these, filled in from neighbouring frames: {_ranges(filled)}")
    return str(out), "\n".join(lines)


def _ranges(indices: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3, 7'."""
    parts, start = [], None
    for k, i in enumerate(indices):
        if start is None:
            start = i
        if k + 1 == len(indices) or indices[k + 1] != i + 1:
            parts.append(f"{start}" if start == i else f"{start}-{i}")
            start = None
    return ", ".join(parts)


def build() -> gr.Blocks:
    examples = sorted(str(p) for p in Path(__file__).with_name("assets").glob("*.jpg"))
    with gr.Blocks(title="VividPortraits") as demo:
        gr.Markdown(
            "# VividPortraits\nAnimate a portrait with the head motion and expressions of a "
            "driving video. **Parsing** shows the facial parsing maps that guide the model."
        )
        with gr.Tab("Parsing"):
            with gr.Tab("Portrait"):
                with gr.Row():
                    image_in = gr.Image(type="filepath", label="Portrait", elem_id="parse-image-input")
                    image_info = gr.Textbox(label="Analysis", lines=4, elem_id="parse-image-info")
                with gr.Row():
                    parsing_out = gr.Image(label="Parsing map", elem_id="parse-parsing")
                    motion_out = gr.Image(label="Motion map (what the model sees)", elem_id="parse-motion")
                    mask_out = gr.Image(label="Foreground / background", elem_id="parse-mask")
                if examples:
                    gr.Examples(examples, inputs=image_in)
                gr.Button("Parse portrait", variant="primary", elem_id="parse-image-button").click(
                    parse_image, image_in, [parsing_out, motion_out, mask_out, image_info]
                )
            with gr.Tab("Driving video"):
                with gr.Row():
                    video_in = gr.Video(label="Driving video", sources=["upload"], elem_id="parse-video-input")
                    video_out = gr.Video(label="Motion maps", elem_id="parse-video-output")
                video_info = gr.Textbox(label="Tracking", lines=4, elem_id="parse-video-info")
                gr.Button("Parse video", variant="primary", elem_id="parse-video-button").click(
                    parse_video, video_in, [video_out, video_info]
                )
    return demo


def main() -> None:
    parser = argparse.ArgumentParser(description="VividPortraits web app")
    parser.add_argument("--port", type=int, default=7860)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build().queue().launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
