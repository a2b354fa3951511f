"""VividPortraits in the browser. Widgets and callbacks only; the work happens in `vivid`."""
from __future__ import annotations

import argparse
import logging
import os
import tempfile
import threading
from pathlib import Path

import gradio as gr
import numpy as np

from vivid.face import FaceAnalyzer, NoFaceError, TrackConfig, colorize, render_motion_map
from vivid.media import InputError, load_image, probe_video, read_video, write_video
from vivid.native_log import filter_native_stderr

log = logging.getLogger("vivid.app")

#: Longest driving video the Parsing tab analyses (frames), to keep the page responsive.
PARSE_VIDEO_MAX_FRAMES = 900
#: How often the Animate tab refreshes its live preview while working (seconds).
PREVIEW_INTERVAL = 0.5
ENGINES = {"Preview (fast, no model weights)": "preview", "Diffusion model": "diffusion"}
_analyzer: FaceAnalyzer | None = None
_weights: str | None = None  # folder of a saved VividPipeline, from --weights / $VIVID_WEIGHTS
_pipeline = None


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


def _analyse_upload(path: str | None):
    if not path:
        raise gr.Error("Upload a portrait first.")
    try:
        rgb = load_image(path).rgb
        return rgb, analyzer().analyze(rgb, Path(path).name)
    except (InputError, NoFaceError) as exc:
        raise gr.Error(str(exc)) from None


def parse_image(path: str | None):
    rgb, a = _analyse_upload(path)
    info = f"Backend: {analyzer().backend_note}"
    if a.notes:
        info += "\n" + "\n".join(f"- {n}" for n in a.notes)
    return overlay(rgb, a.labels), render_motion_map(a), mask_picture(rgb, a.foreground), info


def scaled_motion_maps(path: str | None, seed: int, count: int = 4) -> list[np.ndarray]:
    """The training augmentation made visible: the motion map under `count` random scalings
    (each part by 0.8-1.2, the spacing by 0.7-1.3), seeds `seed`, `seed + 1`, ..."""
    from vivid.face import random_scale

    _, a = _analyse_upload(path)
    return [render_motion_map(random_scale(a, int(seed) + k)) for k in range(count)]


def parse_video(path: str | None, progress=gr.Progress()):
    if not path:
        raise gr.Error("Upload a driving video first.")
    try:
        info = probe_video(path)
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


def _pipeline_or_error():
    global _pipeline
    if not _weights:
        raise gr.Error("No diffusion weights are configured: start the app with --weights FOLDER "
                       "(or set VIVID_WEIGHTS). The preview engine needs none.")
    if _pipeline is None:
        from vivid import VividPipeline

        _pipeline = VividPipeline.tiny() if _weights == "tiny" else VividPipeline.from_pretrained(_weights)
    return _pipeline


def animate(reference: str | None, driving: str | None, engine: str, crop_only: bool, absolute: bool,
            steps: int, guidance: float, seed: int, window: int, overlap: int, cyclic: bool):
    """Generator callback: live preview and status while working, then the finished video."""
    if not reference or not driving:
        raise gr.Error("Upload a portrait and a driving video first.")
    try:
        ref = load_image(reference).rgb
        info = probe_video(driving)
    except InputError as exc:
        raise gr.Error(str(exc)) from None
    state = {"frames": 0, "latest": None, "status": "analysing faces…"}
    total = info.frames or None
    if ENGINES.get(engine, engine) == "preview":
        from vivid.preview import PreviewAnimator, PreviewConfig

        animator = PreviewAnimator(PreviewConfig(crop_only=crop_only, relative=not absolute))
        frames = animator.stream(ref, read_video(driving), info.fps)
    else:
        pipe = _pipeline_or_error()

        def diffusion_frames():
            events = pipe.stream(ref, read_video(driving), window=int(window), overlap=int(overlap), cyclic=cyclic,
                                 steps=int(steps), guidance=float(guidance), seed=int(seed), fps=info.fps,
                                 relative=not absolute, paste_back=not crop_only)
            for event in events:
                if event.kind == "progress":
                    state["status"] = f"denoising step {event.step}/{event.total}"
                    state["latest"] = event.preview
                else:
                    yield event.frame

        frames = diffusion_frames()

    def counted():
        for frame in frames:
            state["frames"] += 1
            state["latest"] = frame
            state["status"] = f"frame {state['frames']}" + (f" of {total}" if total else "")
            yield frame

    out = Path(tempfile.mkdtemp(prefix="vivid_animate_")) / "animation.mp4"
    result: dict = {}

    def work():
        try:
            result["frames"] = write_video(out, counted(), info.fps, audio_from=driving)
        except BaseException as exc:  # reported to the user below, in the request's thread
            result["error"] = exc

    worker = threading.Thread(target=work, daemon=True)
    worker.start()
    while worker.is_alive():
        worker.join(PREVIEW_INTERVAL)
        yield state["latest"], None, state["status"]
    if "error" in result:
        exc = result["error"]
        if isinstance(exc, (InputError, NoFaceError, ValueError)):
            raise gr.Error(str(exc)) from None
        log.exception("animation failed", exc_info=exc)
        raise gr.Error(f"Animation failed: {exc}") from None
    yield state["latest"], str(out), f"done: {result['frames']} frames at {info.fps:g} fps" + (
        ", with the driving video's sound" if info.has_audio else "")


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
        with gr.Tab("Animate"):
            with gr.Row():
                ref_in = gr.Image(type="filepath", label="Portrait", elem_id="animate-reference")
                drv_in = gr.Video(label="Driving video", sources=["upload"], elem_id="animate-driving")
            with gr.Row():
                engine = gr.Radio(
                    list(ENGINES) if _weights else list(ENGINES)[:1], value=next(iter(ENGINES)), label="Engine",
                    info=None if _weights else "The diffusion model needs weights: start the app with --weights FOLDER.",
                    elem_id="animate-engine",
                )
                crop_only = gr.Checkbox(False, label="Face crop only")
                absolute = gr.Checkbox(False, label="Copy the driver's face shape too")
            with gr.Accordion("Diffusion settings", open=False):
                with gr.Row():
                    steps = gr.Slider(1, 50, 25, step=1, label="Denoising steps")
                    guidance = gr.Slider(1.0, 7.0, 3.5, step=0.5, label="Guidance")
                    seed = gr.Number(0, precision=0, label="Seed")
                with gr.Row():
                    window = gr.Slider(4, 32, 24, step=1, label="Window (frames)")
                    overlap = gr.Slider(0, 16, 4, step=1, label="Overlap (frames)")
                    cyclic = gr.Checkbox(True, label="Cyclic overlap")
            go = gr.Button("Animate", variant="primary", elem_id="animate-button")
            with gr.Row():
                live = gr.Image(label="Live preview", elem_id="animate-live")
                result_video = gr.Video(label="Result", elem_id="animate-result")
            status = gr.Textbox(label="Status", elem_id="animate-status")
            if examples:
                gr.Examples(examples, inputs=ref_in)
            go.click(animate, [ref_in, drv_in, engine, crop_only, absolute, steps, guidance, seed, window, overlap, cyclic],
                     [live, result_video, status])
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
                with gr.Accordion("Random scaling (the training augmentation against identity leakage)", open=False):
                    with gr.Row():
                        scale_seed = gr.Number(0, precision=0, label="First seed")
                        scale_button = gr.Button("Show four random scalings")
                    scaled = gr.Gallery(label="Scaled motion maps", columns=4, elem_id="parse-scaled")
                    scale_button.click(scaled_motion_maps, [image_in, scale_seed], scaled)
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
    # Hugging Face Spaces set GRADIO_SERVER_NAME/PORT; locally the app listens on 127.0.0.1 only.
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", 7860)))
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"))
    parser.add_argument("--share", action="store_true", help="create a public gradio.live link")
    parser.add_argument("--weights", default=os.environ.get("VIVID_WEIGHTS"),
                        help="folder of a saved VividPipeline for the diffusion engine (default: $VIVID_WEIGHTS)")
    args = parser.parse_args()
    global _weights
    _weights = args.weights
    filter_native_stderr()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    build().queue().launch(server_name=args.host, server_port=args.port, share=args.share)


if __name__ == "__main__":
    main()
