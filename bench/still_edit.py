"""How fast the Edit tab answers a slider: one edited still re-rendered per change, next to
MediaPipe's bare face mesh on the same picture in the same run.

Target (issue 31): a change re-renders the still in at most 0.2 s on 2 cores. What a change
costs the server here is what `app.edit_render` does: the edits from the sliders, the mesh
edited, one warp, the picture composed, the motion map drawn, both sized for the page and
JPEG-encoded (as the app's inline images send them). The one-off analysis of a new portrait
(`StillEditor(...)`, when a picture is chosen) is timed apart. Each change moves every slider
to a random value in its range (the worst case: every edit at once), or one slider at a time
(`--one`).

    python bench/still_edit.py [PICTURE ...] [--changes 40] [--one] [--record]

Without pictures: the packaged astronaut (512 px) and Grace Hopper (600 px), and, when the
sample data is there, s2.jpg (a 2412x1206 photo, animated at 2048 px as the app caps it).
`--record` writes the figures into bench/RESULTS.md ("Edit tab: one slider change").
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from vivid.face.mesh_backend import mp  # noqa: E402
from vivid.face.motion_edits import MotionEdits  # noqa: E402
from vivid.media import BROWSER_MAX_SIDE, fit_within, load_image  # noqa: E402
from vivid.still_edit import StillEditor  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT.parent / "shared" / "data" / "source" / "s2.jpg"
#: What the app sends: the picture at most this large, JPEG at this quality (app.EDIT_VIEW_SIDE, LIVE_VIEW_QUALITY).
VIEW_SIDE, QUALITY = 768, 80


def bare_mesh(rgb: np.ndarray, runs: int) -> float:
    """Median seconds of MediaPipe's face mesh (irises on) on one picture, its graph built once."""
    times = []
    with mp.solutions.face_mesh.FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=True) as mesh:
        mesh.process(rgb)  # the first call loads the model
        for _ in range(runs):
            start = time.perf_counter()
            mesh.process(rgb)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_values(rng: np.random.Generator, one: bool) -> dict[str, float]:
    names = MotionEdits.names()
    chosen = [names[rng.integers(len(names))]] if one else names
    return {n: float(rng.uniform(MotionEdits.spec(n)["low"], MotionEdits.spec(n)["high"])) for n in chosen}


def change(editor: StillEditor, values: dict[str, float]) -> None:
    """What the app does for one slider change (app.edit_render and its two inline images)."""
    edits = editor.edits_from(values)
    picture = editor.render(edits)
    scale = VIEW_SIDE / max(picture.shape[:2])
    if scale < 1:
        picture = cv2.resize(picture, (round(picture.shape[1] * scale), round(picture.shape[0] * scale)),
                             interpolation=cv2.INTER_AREA)
    for image in (picture, editor.motion_map(edits)):
        cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, QUALITY])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pictures", nargs="*", type=Path)
    parser.add_argument("--changes", type=int, default=40, help="slider changes timed per picture")
    parser.add_argument("--one", action="store_true", help="one slider at a time instead of all at once")
    parser.add_argument("--record", action="store_true", help="write the figures into bench/RESULTS.md")
    args = parser.parse_args()
    pictures = args.pictures or [ROOT / "assets" / "astronaut.jpg", ROOT / "assets" / "grace_hopper.jpg",
                                 *([SAMPLE] if SAMPLE.is_file() else [])]
    rng = np.random.default_rng(0)
    rows = ["| picture | size | bare face mesh | analysis of a new portrait | slider change: median | 90th pct | max |",
            "|---|---|---|---|---|---|---|"]
    worst = 0.0
    for path in pictures:
        rgb, _ = fit_within(load_image(path).rgb, BROWSER_MAX_SIDE)
        mesh = bare_mesh(rgb, 10)
        start = time.perf_counter()
        editor = StillEditor(rgb)
        prepare = time.perf_counter() - start
        change(editor, random_values(rng, args.one))  # warm-up
        times = []
        for _ in range(args.changes):
            values = random_values(rng, args.one)
            start = time.perf_counter()
            change(editor, values)
            times.append(time.perf_counter() - start)
        times.sort()
        worst = max(worst, times[-1])
        rows.append(f"| {path.name} | {rgb.shape[1]}x{rgb.shape[0]} (crop {editor.ref.size} px) | {mesh * 1000:.0f} ms "
                    f"| {prepare * 1000:.0f} ms | {statistics.median(times) * 1000:.0f} ms "
                    f"| {times[int(0.9 * (len(times) - 1))] * 1000:.0f} ms | {times[-1] * 1000:.0f} ms |")
    what = "one slider at a time" if args.one else "every slider moved at once"
    body = "\n".join(rows) + (f"\n\n{args.changes} changes per picture, {what}; a change is the edited still and its "
                              f"motion map, sized and JPEG-encoded as the app sends them. Target: at most 200 ms "
                              f"({'met' if worst <= 0.2 else 'NOT met'}: slowest {worst * 1000:.0f} ms).")
    if args.record:
        from bench.results import record

        record("Edit tab: one slider change", body)
    else:
        print(body)


if __name__ == "__main__":
    main()
