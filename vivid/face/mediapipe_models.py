"""MediaPipe's face models, run the way we need them: both BlazeFace detectors (full range for
small faces, short range for close-ups) on any square window of an image, the face mesh with
irises on a region we choose (with the model's own face-presence score), and selfie
segmentation. Every model ships inside the mediapipe 0.10.14 wheel: nothing is downloaded.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ start-up chatter
warnings.filterwarnings("ignore", message="SymbolDatabase.GetPrototype", category=UserWarning)
from ..deferred_imports import attach, defer  # noqa: E402

defer()  # MediaPipe imports pyplot, sounddevice and solutions never called here: 0.6 s of start-up
import mediapipe as mp  # noqa: E402

attach()
from mediapipe.framework.formats import rect_pb2  # noqa: E402
from mediapipe.python import packet_creator, packet_getter  # noqa: E402
from mediapipe.python.solution_base import SolutionBase  # noqa: E402

from .crop import SquareBox, crop_image  # noqa: E402
from .regions import MeshRegion  # noqa: E402

#: Side of the crop a window is shrunk (or enlarged) to before detection: both detectors
#: resize their input to 128 or 192 px themselves; 256 keeps that resize mild and lets our
#: area-averaging shrink do the rest (a 1080p frame sampled straight to 192 px aliases).
DETECTION_INPUT = 256
#: Selfie-segmentation probability above which a pixel counts as the person.
PERSON_THRESHOLD = 0.5


@dataclass(frozen=True)
class Detection:
    """One face a detector found, in image pixels."""

    box: tuple[float, float, float, float]  # (x0, y0, x1, y1), brows to chin
    keypoints: np.ndarray  # (6, 2): eyes (image-left first when upright), nose tip, mouth, ears
    score: float
    detector: str  # "full" or "short" range

    @property
    def eyes(self) -> np.ndarray:
        return self.keypoints[:2]


class FaceDetectors:
    """MediaPipe's full-range (faces from ~7% to ~45% of the window) and short-range (~15% up to
    the whole window) BlazeFace detectors, looking through one square window at a time."""

    def __init__(self, min_score: float = 0.5):
        self.min_score = min_score
        self._models = {
            "full": mp.solutions.face_detection.FaceDetection(min_detection_confidence=min_score, model_selection=1),
            "short": mp.solutions.face_detection.FaceDetection(min_detection_confidence=min_score, model_selection=0),
        }

    def detect(self, rgb: np.ndarray, window: SquareBox, ranges: tuple[str, ...] = ("full", "short")) -> list[Detection]:
        """Faces inside `window` (which may reach past the image: that part is black, as in
        MediaPipe's own letterboxing), in image pixels."""
        crop = np.ascontiguousarray(crop_image(rgb, window, DETECTION_INPUT, fill=0))
        origin = np.array([window.cx - window.size / 2, window.cy - window.size / 2])
        found = []
        for name in ranges:
            result = self._models[name].process(crop)
            for d in result.detections or []:
                rel = d.location_data.relative_bounding_box
                x0, y0 = origin + window.size * np.array([rel.xmin, rel.ymin])
                w, h = window.size * rel.width, window.size * rel.height
                kp = np.array([(k.x, k.y) for k in d.location_data.relative_keypoints], np.float64)
                found.append(Detection((float(x0), float(y0), float(x0 + w), float(y0 + h)),
                                       origin + window.size * kp, float(d.score[0]), name))
        return found

    def close(self) -> None:
        for model in self._models.values():
            model.close()


# The face mesh on a given region: FaceLandmarkCpu's own steps (MediaPipe 0.10's
# modules/face_landmark/face_landmark_cpu.pbtxt, attention model), except that the
# face-presence score is an output instead of a gate, so the caller can judge it.
_MESH_GRAPH = """
input_stream: "IMAGE:image"
input_stream: "ROI:roi"
output_stream: "LANDMARKS:landmarks"
output_stream: "PRESENCE:presence"
node {
  calculator: "FaceLandmarksModelLoader"
  input_side_packet: "WITH_ATTENTION:with_attention"
  output_side_packet: "MODEL:model"
}
node {
  calculator: "TfLiteCustomOpResolverCalculator"
  output_side_packet: "OP_RESOLVER:op_resolver"
}
node {
  calculator: "ImageToTensorCalculator"
  input_stream: "IMAGE:image"
  input_stream: "NORM_RECT:roi"
  output_stream: "TENSORS:input_tensors"
  options: {
    [mediapipe.ImageToTensorCalculatorOptions.ext] {
      output_tensor_width: 192
      output_tensor_height: 192
      output_tensor_float_range { min: 0.0 max: 1.0 }
    }
  }
}
node {
  calculator: "InferenceCalculator"
  input_stream: "TENSORS:input_tensors"
  input_side_packet: "MODEL:model"
  input_side_packet: "OP_RESOLVER:op_resolver"
  output_stream: "TENSORS:output_tensors"
  options: { [mediapipe.InferenceCalculatorOptions.ext] { delegate { xnnpack {} } } }
}
node {
  calculator: "SplitTensorVectorCalculator"
  input_stream: "output_tensors"
  output_stream: "landmark_tensors"
  output_stream: "face_flag_tensor"
  options: {
    [mediapipe.SplitVectorCalculatorOptions.ext] {
      ranges: { begin: 0 end: 6 }
      ranges: { begin: 6 end: 7 }
    }
  }
}
node {
  calculator: "TensorsToFloatsCalculator"
  input_stream: "TENSORS:face_flag_tensor"
  output_stream: "FLOAT:presence"
  options: { [mediapipe.TensorsToFloatsCalculatorOptions.ext] { activation: SIGMOID } }
}
node {
  calculator: "TensorsToFaceLandmarksWithAttention"
  input_stream: "TENSORS:landmark_tensors"
  output_stream: "LANDMARKS:region_landmarks"
}
node {
  calculator: "LandmarkProjectionCalculator"
  input_stream: "NORM_LANDMARKS:region_landmarks"
  input_stream: "NORM_RECT:roi"
  output_stream: "NORM_LANDMARKS:landmarks"
}
"""


class _RegionMeshGraph(SolutionBase):
    """`_MESH_GRAPH` run once per call, like `SolutionBase.process` but without its per-call
    generic work (type dispatch, a fresh namedtuple class per call): at video rate that was a
    tenth of the mesh's own time."""

    def __init__(self):
        super().__init__(graph_config=_MESH_GRAPH, side_inputs={"with_attention": True},
                         outputs=["landmarks", "presence"])

    def landmarks(self, image: np.ndarray, roi: rect_pb2.NormalizedRect) -> tuple[object | None, float]:
        """The face's landmark list (normalised to `image`; None when the graph gave none, e.g.
        for an empty region) and its presence score."""
        self._graph_outputs.clear()
        self._simulated_timestamp += 33333
        stamp = self._simulated_timestamp
        frame = packet_creator.create_image_frame(data=image, image_format=mp.ImageFormat.SRGB)
        self._graph.add_packet_to_input_stream(stream="image", packet=frame.at(stamp))
        self._graph.add_packet_to_input_stream(stream="roi", packet=packet_creator.create_proto(roi).at(stamp))
        self._graph.wait_until_idle()
        # Reading an empty packet aborts the process inside MediaPipe: look first.
        landmarks, presence = (self._graph_outputs.get(name) for name in ("landmarks", "presence"))
        if landmarks is None or landmarks.is_empty() or presence is None or presence.is_empty():
            return None, 0.0
        return packet_getter.get_proto(landmarks), packet_getter.get_float(presence)


class FaceMeshModel:
    """MediaPipe's face mesh with irises, on a region we choose: 478 points (x, y in pixels,
    z in the same scale) and the model's face-presence score (0-1)."""

    def __init__(self):
        self._graph = _RegionMeshGraph()

    def run(self, rgb: np.ndarray, region: MeshRegion) -> tuple[np.ndarray, float]:
        """(478, 3) float32 points and the presence score of the face in `region`."""
        h, w = rgb.shape[:2]
        # Only the part of the image the region covers is handed over (a 1080p frame copied
        # into MediaPipe costs more than a small face's mesh).
        x0, y0, x1, y1 = region.bounds()
        x0, y0 = max(int(x0) - 1, 0), max(int(y0) - 1, 0)
        x1, y1 = min(int(np.ceil(x1)) + 1, w), min(int(np.ceil(y1)) + 1, h)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return np.zeros((478, 3), np.float32), 0.0
        part = np.ascontiguousarray(rgb[y0:y1, x0:x1])
        pw, ph = x1 - x0, y1 - y0
        roi = rect_pb2.NormalizedRect(x_center=(region.cx - x0) / pw, y_center=(region.cy - y0) / ph,
                                      width=region.size / pw, height=region.size / ph, rotation=region.angle)
        landmarks, presence = self._graph.landmarks(part, roi)
        if landmarks is None:
            return np.zeros((478, 3), np.float32), 0.0
        points = _xyz(landmarks) * np.array([pw, ph, pw], np.float32) + np.array([x0, y0, 0], np.float32)
        return points, float(presence)

    def close(self) -> None:
        self._graph.close()


class PersonSegmenter:
    """Selfie segmentation: which pixels are the person (face, hair, neck, body)."""

    INPUT = 256  # the general model's working resolution

    def __init__(self):
        self._model = mp.solutions.selfie_segmentation.SelfieSegmentation(model_selection=0)

    def probability(self, rgb: np.ndarray) -> np.ndarray:
        """(H, W) float32 probability that each pixel is the person."""
        return self._model.process(np.ascontiguousarray(rgb)).segmentation_mask

    def mask(self, rgb: np.ndarray) -> np.ndarray:
        return self.probability(rgb) > PERSON_THRESHOLD

    def close(self) -> None:
        self._model.close()


class BodyModel:
    """BlazePose (full model, the one the wheel ships): a person detector and 33 body landmarks."""

    NOSE, EYES = 0, (2, 5)

    def __init__(self, min_score: float = 0.3):
        self._model = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1,
                                             min_detection_confidence=min_score)

    def head_points(self, rgb: np.ndarray) -> np.ndarray | None:
        """(3, 2) pixel positions of the nose and the two eyes of the person found, or None."""
        result = self._model.process(np.ascontiguousarray(rgb))
        if not result.pose_landmarks:
            return None
        h, w = rgb.shape[:2]
        lm = result.pose_landmarks.landmark
        return np.array([(lm[i].x * w, lm[i].y * h) for i in (self.NOSE, *self.EYES)], np.float64)

    def close(self) -> None:
        self._model.close()


# A serialised NormalizedLandmark with only x, y, z set: field tag 1 (length 15), then
# tags 0x0d/0x15/0x1d each followed by a little-endian float32.
_LANDMARK_BYTES = 17
_TAG_OFFSETS = {0: 0x0A, 1: 0x0F, 2: 0x0D, 7: 0x15, 12: 0x1D}
_XYZ_BYTES = [3, 4, 5, 6, 8, 9, 10, 11, 13, 14, 15, 16]


def _xyz(face) -> np.ndarray:
    """(N, 3) normalised x, y, z of a landmark list. Reads the serialised protobuf in one go
    (ten times faster than attribute access per point, which matters at video rate) and
    falls back to attribute access whenever the layout is not the expected one."""
    raw = np.frombuffer(face.SerializeToString(), np.uint8)
    n = len(face.landmark)
    if raw.size == n * _LANDMARK_BYTES:
        rows = raw.reshape(n, _LANDMARK_BYTES)
        if all((rows[:, i] == v).all() for i, v in _TAG_OFFSETS.items()):
            return rows[:, _XYZ_BYTES].copy().view("<f4").reshape(n, 3).astype(np.float32)
    return np.array([(p.x, p.y, p.z) for p in face.landmark], np.float32)
