"""The memory ceiling's estimates (vivid/job_memory.py) against measured peaks.

Usage: python bench/job_memory.py

Each case runs in a fresh process: the job is prepared and its engine built (models loaded),
then resident memory is read, the kernel's peak counter reset (/proc/self/clear_refs), the job
run, and the peak read again. "Measured" is the peak above the resident memory before the job:
what the job added to a process with its models loaded, which is what the estimate is of. An
estimate below the measured peak would let a job through that the system may kill.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ONE_CASE = r"""
import json, sys, numpy as np
from pathlib import Path
from vivid.animation import AnimationJob, AnimationRequest
from vivid.engines import make_engine
from vivid.options import AnimateOptions

def status(key):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024

portrait, driving, out, options = sys.argv[1], sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
job = AnimationJob(AnimationRequest(Path(portrait), Path(driving), Path(out), AnimateOptions(**options)))
job.prepare()
engine = make_engine(job.options)
h, w = job.reference.shape[:2]
dh, dw = job.driving.size
need = engine.memory_need(job.total, h * w, dh * dw)
before = status("VmRSS")
Path("/proc/self/clear_refs").write_text("5")  # the peak counter (VmHWM) starts again from now
job.run(engine)
print(json.dumps({"before": before, "peak": status("VmHWM"), "estimate": need.total, "frames": job.total}))
"""

#: (label, engine options, frames, side of portrait and clip)
CASES = [
    ("preview, 100 frames, 512 px", dict(engine="preview"), 100, 512),
    ("preview, 400 frames, 512 px", dict(engine="preview"), 400, 512),
    ("mini diffusion, 100 frames, window 8", dict(engine="diffusion", window=8, overlap=2, steps=1), 100, 256),
    ("mini diffusion, 100 frames, window 24", dict(engine="diffusion", window=24, overlap=4, steps=1), 100, 256),
    ("mini diffusion, 400 frames, window 24", dict(engine="diffusion", window=24, overlap=4, steps=1), 400, 256),
    ("mini diffusion, guidance 3.5, window 24", dict(engine="diffusion", window=24, overlap=4, steps=1,
                                                     guidance=3.5), 100, 256),
]


def inputs(folder: Path, frames: int, side: int) -> tuple[Path, Path]:
    import cv2
    import numpy as np
    from PIL import Image
    from skimage import data

    from vivid.media import write_video

    face = cv2.resize(data.astronaut(), (side, side), interpolation=cv2.INTER_AREA)
    portrait, clip = folder / f"portrait{side}.png", folder / f"clip{side}_{frames}.mp4"
    if not clip.exists():
        Image.fromarray(face).save(portrait)
        write_video(clip, (np.roll(face, i, axis=1) for i in range(frames)), 25)
    return portrait, clip


def main() -> None:
    from bench.results import record
    from vivid.models.shipped import PROJECT_MINI_MODEL_DIR

    load = os.getloadavg()
    rows = ["| case | before the job | measured peak above it | estimated need | estimate / measured |",
            "|---|---|---|---|---|"]
    env = {**os.environ, "VIVID_SHIPPED_MODEL": str(PROJECT_MINI_MODEL_DIR)}
    with tempfile.TemporaryDirectory(prefix="vivid-job-memory-") as tmp:
        tmp = Path(tmp)
        for label, options, frames, side in CASES:
            portrait, clip = inputs(tmp, frames, side)
            done = subprocess.run([sys.executable, "-c", ONE_CASE, str(portrait), str(clip), str(tmp / "out.mp4"),
                                   json.dumps(options)], cwd=ROOT, capture_output=True, text=True, env=env, timeout=1200)
            if done.returncode != 0:
                rows.append(f"| {label} | failed: {done.stderr.strip().splitlines()[-1][:120]} | | | |")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            added = r["peak"] - r["before"]
            rows.append(f"| {label} | {r['before'] / 2**20:.0f} MB | {added / 2**20:.0f} MB | "
                        f"{r['estimate'] / 2**20:.0f} MB | {r['estimate'] / max(added, 1):.2f} |")
            print(rows[-1], flush=True)
    record("Memory ceiling: estimates against measured peaks (issue 32)",
           f"Load average before the run: {load[0]:.1f}, {load[1]:.1f}, {load[2]:.1f}. Driving clips of the "
           "astronaut's face moving, at the portrait's size; the mini model in its own dtype, 1 step.\n\n"
           + "\n".join(rows))


if __name__ == "__main__":
    main()
