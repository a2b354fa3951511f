"""The Parsing tab: callbacks on real inputs, and the page in a real (headless) browser."""
from __future__ import annotations

import os
import threading
import time

import gradio as gr
import numpy as np
import pytest
from PIL import Image

import app
from conftest import ROOT, shared_file
from vivid.media import probe_video, write_video
from vivid.model_host import ModelHost


def test_parse_image_gives_three_pictures_and_the_backend(tmp_path, astronaut):
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    parsing, motion, mask, eyes, info = app.parse_image(str(path))
    for picture in (parsing, motion, mask):
        assert picture.shape == astronaut.shape and picture.dtype == np.uint8
    assert "mesh" in info or "farl" in info
    assert "/" not in info.replace("selfie segmentation", "")  # no server paths for visitors
    # The eye close-up: page-wide, with the eyelid lines (white) and irises (yellow) of the map.
    assert eyes.shape[1] == 900 and eyes.shape[0] > 100
    assert ((eyes == (255, 255, 255)).all(axis=-1)).sum() > 500 and ((eyes == (255, 255, 0)).all(axis=-1)).sum() > 500
    assert not np.array_equal(parsing, astronaut)  # the map is drawn over the photo


def test_parse_image_errors_are_messages(tmp_path):
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(flat)
    with pytest.raises(gr.Error, match="no face"):
        app.parse_image(str(flat))
    with pytest.raises(gr.Error, match="Upload"):
        app.parse_image(None)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"nope")
    with pytest.raises(gr.Error, match="not a readable image"):
        app.parse_image(str(broken))


def test_parse_video_lists_faceless_frames(tmp_path, astronaut):
    frames = [np.roll(astronaut, i, axis=1) for i in range(12)]
    for i in range(4, 10):
        frames[i] = np.zeros_like(astronaut)
    src = tmp_path / "driving.mp4"
    write_video(src, iter(frames), fps=25)
    out, info = app.parse_video(str(src), progress=NoProgress())
    assert probe_video(out).frames == 12
    assert "Frames without a face: 4-9" in info


class NoProgress:
    def tqdm(self, iterable, **kwargs):
        return iterable


def test_ranges():
    assert app._ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10"
    assert app._ranges([]) == ""


def test_animate_streams_status_then_the_video(tmp_path, astronaut, grace_hopper):
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    src = tmp_path / "driving.mp4"
    write_video(src, iter([np.roll(astronaut, 2 * i, axis=1) for i in range(20)]), fps=20)
    updates = list(app.animate(str(ref), str(src), None, "Preview (fast, no model weights)", False, False, False, 25, 3.5, 0, 24, 4, True))
    live, video, side, status, progress = updates[-1]
    assert video is not None and probe_video(video).frames == 20
    assert max(live.shape[:2]) == app.LIVE_VIEW_SIDE and "done: 20 frames" in status  # sent downscaled
    assert live.shape[1] / live.shape[0] == pytest.approx(grace_hopper.shape[1] / grace_hopper.shape[0], abs=0.01)
    assert probe_video(video).width == grace_hopper.shape[1]  # the video keeps the portrait's size
    assert all(u[1] is None for u in updates[:-1])  # the video only once it is complete


def test_animate_errors_are_messages(tmp_path, astronaut):
    def ref_ok(folder):
        Image.fromarray(astronaut).save(folder / "ok.png")
        return folder / "ok.png"

    src = tmp_path / "driving.mp4"
    write_video(src, iter([astronaut] * 3), fps=20)
    flat = tmp_path / "flat.png"
    Image.fromarray(np.full((200, 200, 3), 90, np.uint8)).save(flat)
    with pytest.raises(gr.Error, match="no face"):
        list(app.animate(str(flat), str(src), None, "Preview (fast, no model weights)", False, False, False, 25, 3.5, 0, 24, 4, True))
    with pytest.raises(gr.Error, match="Upload"):
        list(app.animate(None, str(src), None, "Preview (fast, no model weights)", False, False, False, 25, 3.5, 0, 24, 4, True))
    with pytest.raises(gr.Error, match="not installed"):
        list(app.animate(str(ref_ok(tmp_path)), str(src), None, "Diffusion model", False, False, False, 25, 3.5, 0, 24, 4, True))


def test_animate_with_the_diffusion_engine(tmp_path, astronaut, grace_hopper, monkeypatch):
    monkeypatch.setattr(app, "HOST", ModelHost("tiny"))  # random tiny model: exercises the wiring only
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    src = tmp_path / "driving.mp4"
    write_video(src, iter([np.roll(astronaut, 2 * i, axis=1) for i in range(6)]), fps=12)
    updates = list(app.animate(str(ref), str(src), None, "Diffusion model", False, False, False, 2, 3.5, 0, 4, 1, True))
    assert updates[-1][3].startswith("done: 6 frames")
    assert probe_video(updates[-1][1]).frames == 6


def test_random_scaling_preview(tmp_path, astronaut):
    path = tmp_path / "a.png"
    Image.fromarray(astronaut).save(path)
    maps = app.scaled_motion_maps(str(path), seed=5)
    assert len(maps) == 4 and all(m.shape == astronaut.shape for m in maps)
    assert not np.array_equal(maps[0], maps[1])
    assert np.array_equal(maps[0], app.scaled_motion_maps(str(path), seed=5)[0])


PREVIEW = "Preview (fast, no model weights)"


def _cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def test_cancel_stops_the_work_at_once_and_leaves_no_output(tmp_path, monkeypatch, grace_hopper):
    """Closing the generator is what Gradio does on Cancel and when the tab closes."""
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "out")
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    clip = shared_file("driving", "d6.mp4")  # 1008 frames: far from done when cancelled
    job = app.animate(str(ref), str(clip), None, PREVIEW, False, False, True, 25, 3.5, 0, 24, 4, True)
    while True:
        live, _, _, status, _ = next(job)
        if status.startswith("frame") and int(status.split()[1]) >= 5:
            break
    t0 = time.monotonic()
    job.close()
    assert time.monotonic() - t0 < 1.0
    assert not any(t.name == "vivid-animate" for t in threading.enumerate())
    cpu = _cpu_seconds()
    time.sleep(1.0)
    assert _cpu_seconds() - cpu < 0.3  # nothing keeps running
    assert not list((tmp_path / "out").rglob("*.mp4"))  # the partial video is gone, and stays gone


def test_cancel_button_stops_the_page_job(tmp_path, monkeypatch, grace_hopper):
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "out")
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    page = type("Request", (), {"session_hash": "page-1"})()
    job = app.animate(str(ref), None, str(ROOT / "assets" / "templates" / "talking.npz"), PREVIEW, False, False, False,
                      25, 3.5, 0, 24, 4, True, request=page)
    while not next(job)[3].startswith("frame"):
        pass
    # Gradio pulls the job's updates while the Cancel click is answered; the page shows
    # whichever arrives last, so no progress update may come after the answer.
    answer: list[tuple[float, str]] = []
    clicked = time.monotonic()
    button = threading.Thread(target=lambda: answer.append((time.monotonic(), app.cancel(page))))
    button.start()
    updates = [(time.monotonic(), update) for update in job]
    button.join()
    answered, said = answer[0]
    assert said == "cancelled" and answered - clicked < 1.0
    assert updates and all(update[3] == "cancelled" for when, update in updates if when >= answered)
    assert updates[-1][1][3] == "cancelled" and updates[-1][1][1] is None
    assert not list((tmp_path / "out").rglob("*.mp4"))


def test_example_template_drives_with_sound_and_side_by_side(tmp_path, monkeypatch, astronaut):
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "out")
    ref = tmp_path / "ref.png"
    Image.fromarray(astronaut).save(ref)
    template = ROOT / "assets" / "templates" / "speech.npz"
    updates = list(app.animate(str(ref), None, str(template), PREVIEW, False, False, True, 25, 3.5, 0, 24, 4, True))
    live, video, side, status, progress = updates[-1]
    info = probe_video(video)
    assert (info.frames, info.fps, info.has_audio) == (100, 25, True) and "with the driving sound" in status
    side_info = probe_video(side)
    assert side_info.frames == 100 and side_info.width > 2.5 * side_info.height  # three panels
    assert 'value="1.000"' in progress
    fractions = [u[4] for u in updates[:-1] if "progress value" in u[4]]
    assert fractions, "a progress bar while working"


def test_every_example_pair_is_shipped_and_runs_as_it_is():
    from vivid.face import MotionTemplate

    assert len(app.EXAMPLES) >= 4
    for portrait, template in app.EXAMPLES:
        assert (ROOT / "assets" / portrait).is_file()
        t = MotionTemplate.load(ROOT / "assets" / "templates" / template)
        assert len(t) >= 50 and t.found.all()
        video = app.template_video(ROOT / "assets" / "templates" / template)
        assert probe_video(video).frames == len(t)


def test_faceless_start_fails_fast(tmp_path, astronaut):
    ref = tmp_path / "ref.png"
    Image.fromarray(astronaut).save(ref)
    src = tmp_path / "late_face.mp4"
    write_video(src, iter([np.zeros_like(astronaut)] * 100 + [astronaut] * 20), fps=25)
    t0 = time.monotonic()
    with pytest.raises(gr.Error, match="No face in the first 3 s"):
        next(app.animate(str(ref), str(src), None, PREVIEW, False, False, False, 25, 3.5, 0, 24, 4, True))
    assert time.monotonic() - t0 < 10


def test_one_frame_driving_video_warns(tmp_path, astronaut, monkeypatch):
    warnings = []
    monkeypatch.setattr(app.gr, "Warning", lambda message, *a, **k: warnings.append(message))
    ref = tmp_path / "ref.png"
    Image.fromarray(astronaut).save(ref)
    src = tmp_path / "one.mp4"
    write_video(src, iter([astronaut]), fps=25)
    updates = list(app.animate(str(ref), str(src), None, PREVIEW, False, False, False, 25, 3.5, 0, 24, 4, True))
    assert updates[-1][3].startswith("done: 1 frames") and "single frame" in warnings[0]


def test_overlap_must_be_smaller_than_the_window(tmp_path, astronaut, monkeypatch):
    monkeypatch.setattr(app, "HOST", ModelHost("tiny"))
    message, button = app.check_settings("Diffusion model", 8, 8)
    assert message["visible"] and "smaller than the window" in message["value"] and button["interactive"] is False
    message, button = app.check_settings("Diffusion model", 8, 4)
    assert not message["visible"] and button["interactive"] is True
    assert app.check_settings(PREVIEW, 8, 8)[1]["interactive"] is True  # hidden settings do not block the preview
    settings, _, _ = app.engine_changed(PREVIEW, 24, 4)
    assert settings["visible"] is False and app.engine_changed("Diffusion model", 24, 4)[0]["visible"] is True
    ref = tmp_path / "ref.png"
    Image.fromarray(astronaut).save(ref)
    with pytest.raises(gr.Error, match="smaller than the window"):
        next(app.animate(str(ref), None, str(ROOT / "assets" / "templates" / "talking.npz"), "Diffusion model",
                         False, False, False, 2, 3.5, 0, 8, 8, True))


def test_visitor_text_hides_server_paths():
    assert app.visitor_text("/tmp/gradio/abc123/clip.mp4: not a readable video") == "clip.mp4: not a readable video"
    assert app.visitor_text("weights not found in /root/.cache/torch") == "weights not found in torch"
    assert app.visitor_text("frame 3 of 10 (25 fps)") == "frame 3 of 10 (25 fps)"


def test_old_outputs_are_swept(tmp_path, monkeypatch, astronaut):
    old, new = tmp_path / "animate_old", tmp_path / "animate_new"
    old.mkdir(), new.mkdir()
    (old / "animation.mp4").write_bytes(b"x")
    os.utime(old, (time.time() - 7200, time.time() - 7200))
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path)
    monkeypatch.setattr(app, "MAX_AGE", 3600)
    write_video(tmp_path.parent / "one.mp4", iter([astronaut]), fps=25)
    app.parse_video(str(tmp_path.parent / "one.mp4"), progress=NoProgress())  # a job sweeps before it writes
    assert not old.exists() and new.exists()


def test_legend_lists_every_label_with_its_colour():
    from vivid.face import LABELS

    legend = app.legend_html()
    for name in LABELS:
        assert f'data-label="{name}"' in legend
    assert "#e6bea0" in legend  # skin's palette colour


def test_live_step_animates_webcam_frames(tmp_path, astronaut, grace_hopper):
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    session = None
    outputs = []
    for i in range(6):
        out, motion, session, rate = app.live_step(np.roll(astronaut, 6 * i, axis=0), str(ref), session)
        outputs.append(out)
    assert max(outputs[0].shape[:2]) <= 512
    assert not np.array_equal(outputs[1], outputs[-1])  # the portrait follows the moving face
    assert motion.max() > 0 and "frames/s" in rate


def test_live_view_frames_travel_inline_as_jpeg(grace_hopper, tmp_path):
    import base64

    import cv2
    from gradio.processing_utils import move_files_to_cache

    live = app.inline_image(label="live")
    frame = app._fit(grace_hopper, app.LIVE_VIEW_SIDE)
    sent = move_files_to_cache(live.postprocess(frame), live, postprocess=True)  # what Gradio sends
    assert sent["url"].startswith("data:image/jpeg;base64,") and sent["path"] is None  # no file, no second request
    seen = cv2.cvtColor(cv2.imdecode(np.frombuffer(base64.b64decode(sent["url"].split(",", 1)[1]), np.uint8),
                                     cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    assert seen.shape == frame.shape
    assert np.abs(seen.astype(int) - frame.astype(int)).mean() < 3  # colours in the right order, mild JPEG loss
    assert sent["size"] < frame.nbytes / 10
    assert live.postprocess(None) is None


def test_warm_up_builds_the_face_analysers_before_the_first_click(monkeypatch, tmp_path):
    from vivid.face import shared_analyzers

    monkeypatch.setattr(shared_analyzers, "_analyzers", {})
    app.warm_up(tmp_path / "missing.jpg")  # a missing asset costs the first visitor time, it does not stop the server
    app.warm_up()
    assert set(shared_analyzers._analyzers) == {("mesh", False), (app.HOST.parser, True)}


def test_build_has_the_stable_elem_ids():
    demo = app.build()
    ids = {getattr(b, "elem_id", None) for b in demo.blocks.values()}
    for elem in ("animate-reference", "animate-driving", "animate-button", "animate-live", "animate-result",
                 "animate-status", "animate-cancel", "animate-engine", "animate-window", "animate-overlap",
                 "animate-examples", "live-webcam", "live-output"):
        assert elem in ids, elem


def _smeared_share(frame: np.ndarray) -> float:
    """Share of the frame made of border pixels repeated outwards (rows/columns identical to
    their neighbour, counted from each edge), what a crop reaching past the image shows."""
    def run(lines) -> int:
        n = 0
        while n + 1 < len(lines) and np.abs(lines[n].astype(int) - lines[n + 1].astype(int)).max() <= 2:
            n += 1
        return n

    h, w = frame.shape[:2]
    rows = run(frame) + run(frame[::-1])
    cols = run(frame.transpose(1, 0, 2)) + run(frame.transpose(1, 0, 2)[::-1])
    return (rows * w + cols * h) / (h * w)


def test_face_crop_only_on_a_tight_portrait_has_no_smeared_border(tmp_path, grace_hopper, astronaut_analysis, astronaut):
    x0, y0, x1, y1 = (int(v) for v in astronaut_analysis.box)
    pad = (x1 - x0) // 4
    tight = astronaut[max(y0 - 2 * pad, 0): y1 + pad, x0 - pad: x1 + pad]  # hardly more than the face
    ref = tmp_path / "tight.png"
    Image.fromarray(tight).save(ref)
    src = tmp_path / "driving.mp4"
    write_video(src, iter([np.roll(astronaut, 2 * i, axis=1) for i in range(8)]), fps=20)
    updates = list(app.animate(str(ref), str(src), None, PREVIEW, True, False, False, 25, 3.5, 0, 24, 4, True))
    from vivid.media import read_video

    frames = list(read_video(updates[-1][1]))
    assert len(frames) == 8
    assert max(_smeared_share(f) for f in frames) < 0.05


def test_cancel_stops_the_diffusion_engine_within_a_denoising_step(tmp_path, monkeypatch, astronaut, grace_hopper):
    monkeypatch.setattr(app, "HOST", ModelHost("tiny"))
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "out")
    steps_run = []
    pipe = app.HOST.pipeline()
    real = pipe.stream

    def counting(*args, **kwargs):
        for event in real(*args, **kwargs):
            if event.kind == "progress":
                steps_run.append(event.step)
            yield event

    monkeypatch.setattr(pipe, "stream", counting)
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    src = tmp_path / "driving.mp4"
    write_video(src, iter([np.roll(astronaut, 2 * i, axis=1) for i in range(8)]), fps=12)
    job = app.animate(str(ref), str(src), None, "Diffusion model", False, False, False, 50, 3.5, 0, 4, 1, True)
    for update in job:
        if update[3].startswith("denoising step"):
            break
    seen = len(steps_run)
    job.close()
    assert len(steps_run) <= seen + 1  # at most the step under way finishes
    assert not any(t.name == "vivid-animate" for t in threading.enumerate())
    assert not app.HOST.busy  # the next diffusion job can start at once
    assert not list((tmp_path / "out").rglob("*.mp4"))


def test_diffusion_engine_with_an_example_template(tmp_path, monkeypatch, grace_hopper):
    monkeypatch.setattr(app, "HOST", ModelHost("tiny"))
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "out")
    ref = tmp_path / "ref.png"
    Image.fromarray(grace_hopper).save(ref)
    template = ROOT / "assets" / "templates" / "head-motion.npz"
    updates = list(app.animate(str(ref), None, str(template), "Diffusion model", False, False, False, 1, 3.5, 0, 8, 2, True))
    assert probe_video(updates[-1][1]).frames == 78


def test_the_edit_tab_edits_resets_downloads_and_hands_its_edits_to_animate(tmp_path, astronaut, grace_hopper,
                                                                            monkeypatch):
    monkeypatch.setattr(app, "OUTPUT_DIR", tmp_path / "out")
    ref = tmp_path / "ref.png"
    Image.fromarray(astronaut).save(ref)
    state, picture, motion, status, *values = app.edit_load(str(ref), app.AUTO_FACE)
    assert picture.shape == astronaut.shape and np.array_equal(picture, astronaut)  # untouched sliders: the portrait
    assert motion.shape == (384, 384, 3) and "Move a slider" in status
    by_name = dict(zip(app.EDIT_NAMES, values))
    assert by_name["smile"] == 0 and by_name["scale"] == 1 and 0.2 < by_name["left_eye_open"] < 0.45
    by_name["smile"] = 0.8
    state, edited, motion2, status = app.edit_render(state, *[by_name[n] for n in app.EDIT_NAMES])
    assert status == "edits: smile=0.8" and not np.array_equal(edited, astronaut)
    assert not np.array_equal(motion, motion2)
    saved = app.edit_download(state)
    assert saved.endswith(".png") and np.asarray(Image.open(saved)).shape == astronaut.shape
    # Animate applies the Edit tab's edits when asked to.
    assert app._options(app.PREVIEW_ENGINE, False, False, 25, 3.5, 0, 24, 4, True, "driving", None, True,
                        state).edits == app.MotionEdits(smile=0.8)
    assert not app._options(app.PREVIEW_ENGINE, False, False, 25, 3.5, 0, 24, 4, True, "driving", None, False,
                            state).edits
    assert "smile=0.8" in app.edits_summary(state, True) and app.edits_summary(state, False) == ""
    state, back, _, status, *values = app.edit_reset(state)
    assert np.array_equal(back, astronaut) and status.startswith("reset")
    # A bad value is a message, not a crash.
    by_name["yaw"] = 90
    with pytest.raises(gr.Error, match="yaw=90 is out of range"):
        app.edit_render(state, *[by_name[n] for n in app.EDIT_NAMES])


def test_the_face_picker_offers_each_face_from_the_left(tmp_path, astronaut, grace_hopper):
    import cv2

    h = astronaut.shape[0]
    grace = cv2.resize(grace_hopper, (round(grace_hopper.shape[1] * h / grace_hopper.shape[0]), h))
    two = tmp_path / "two.png"
    Image.fromarray(np.hstack([astronaut, grace])).save(two)
    one = tmp_path / "one.png"
    Image.fromarray(astronaut).save(one)
    assert app.face_choices(str(two)) == [app.AUTO_FACE, "1 of 2, from the left", "2 of 2, from the left"]
    assert app.face_choices(str(one)) == [app.AUTO_FACE]
    assert app._face_number("2 of 2, from the left") == 2 and app._face_number(app.AUTO_FACE) is None
    state, picture, *_ = app.edit_load(str(two), "2 of 2, from the left")
    left_half = slice(0, int(0.4 * picture.shape[1]))  # the page's picture is scaled: the astronaut's side
    state, edited, *_ = app.edit_render(state, *[{"yaw": 15}.get(n, v) for n, v in
                                                 zip(app.EDIT_NAMES, app.edit_reset(state)[4:])])
    assert np.array_equal(np.asarray(edited)[:, left_half], np.asarray(picture)[:, left_half])  # the left face untouched
    assert not np.array_equal(edited, picture)
