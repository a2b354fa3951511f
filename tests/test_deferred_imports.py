"""The command line's start-up skips modules MediaPipe imports but the CLI never uses, and
those modules still work whenever something does use them."""
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_mediapipe_loads_without_running_pyplot_and_pyplot_still_works_when_used():
    out = run("""
        import sys
        from vivid.deferred_imports import defer
        from vivid.deferred_imports import UNUSED_MEDIAPIPE_IMPORTS
        assert defer() == list(UNUSED_MEDIAPIPE_IMPORTS)
        import mediapipe
        from vivid.face import FaceAnalyzer
        # Imported by MediaPipe, but none of their code has run yet.
        print(type(sys.modules["matplotlib.pyplot"]).__name__, type(sys.modules["matplotlib"]).__name__)
        import matplotlib
        matplotlib.use("Agg")  # the evaluation report's way in (it switches pyplot's backend too)
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        print(type(plt).__name__, matplotlib.get_backend().lower(), plt is sys.modules["matplotlib.pyplot"])
    """).split()
    assert out[:2] == ["DeferredModule", "DeferredModule"]
    assert out[2:] == ["module", "agg", "True"]


def test_modules_already_imported_or_missing_are_left_alone():
    out = run("""
        import sys, json
        import matplotlib
        from vivid.deferred_imports import defer
        print(json.dumps(defer(("matplotlib", "matplotlib.pyplot", "no_such_module_here"))))
    """)
    assert out.strip() == "[]"  # matplotlib is real already; pyplot then imports normally


def test_every_front_end_starts_mediapipe_without_pyplot():
    """The face-mesh backend defers them itself, so the app, the evaluation and the benchmarks
    start MediaPipe as quickly as the command line; the mesh still runs."""
    out = run("""
        import sys
        import numpy as np
        from vivid.face.mesh_backend import MeshRunner
        with MeshRunner() as runner:
            found = runner.faces(np.zeros((64, 64, 3), np.uint8))
        print(type(sys.modules["matplotlib.pyplot"]).__name__, len(found))
    """).split()
    assert out == ["DeferredModule", "0"]


def test_mediapipe_parts_the_mesh_does_not_use_load_when_used():
    """Its Tasks API and the hand, body and drawing solutions wait until first used, then work
    as if imported at once (as attributes of their packages too)."""
    out = run("""
        import sys
        import vivid.face.mediapipe_models
        import mediapipe as mp
        print(type(sys.modules["mediapipe.tasks.python"]).__name__, type(sys.modules["mediapipe.python.solutions.hands"]).__name__)
        from mediapipe.tasks.python import vision
        print(vision.FaceLandmarker.__name__, mp.tasks.BaseOptions.__name__, int(mp.solutions.hands.HandLandmark.WRIST))
        print(callable(mp.solutions.drawing_utils.draw_landmarks), callable(mp.solutions.drawing_styles.get_default_pose_landmarks_style))
    """).split()
    assert out == ["DeferredModule", "DeferredModule", "FaceLandmarker", "BaseOptions", "0", "True", "True"]
