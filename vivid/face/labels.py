"""The parsing-map vocabulary shared by every face backend, and the motion-map palette."""
from __future__ import annotations

import numpy as np

#: Parsing-map classes; the value of a pixel in `FaceAnalysis.labels` indexes this tuple.
#: "left"/"right" always mean image-left/image-right, whatever the backend calls them.
LABELS: tuple[str, ...] = (
    "background",
    "skin",
    "left_brow",
    "right_brow",
    "left_eye",
    "right_eye",
    "nose",
    "upper_lip",
    "inner_mouth",
    "lower_lip",
    "hair",
    "body",  # neck, shoulders and clothes
)
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}

#: The parts that carry expression (brows to lower lip); the motion map shows only these.
EXPRESSION_PARTS: tuple[str, ...] = LABELS[LABEL_INDEX["left_brow"] : LABEL_INDEX["lower_lip"] + 1]

#: Components that random scaling moves as rigid units (the lips and mouth move together).
COMPONENTS: dict[str, tuple[str, ...]] = {
    "left_brow": ("left_brow",),
    "right_brow": ("right_brow",),
    "left_eye": ("left_eye",),
    "right_eye": ("right_eye",),
    "nose": ("nose",),
    "mouth": ("upper_lip", "inner_mouth", "lower_lip"),
}
#: Order in which moved components are painted: later ones win where two overlap
#: (brows over eyes over nose).
PAINT_ORDER: tuple[str, ...] = ("nose", "mouth", "left_eye", "right_eye", "left_brow", "right_brow")

#: Motion-map colours (RGB). Fixed so that a trained model and a user reading the map
#: agree on what each colour means; left/right parts differ so the map shows head yaw.
MOTION_PALETTE: dict[str, tuple[int, int, int]] = {
    "left_brow": (255, 170, 0),
    "right_brow": (255, 85, 0),
    "left_eye": (0, 170, 255),
    "right_eye": (0, 85, 255),
    "nose": (0, 200, 80),
    "upper_lip": (255, 0, 128),
    "inner_mouth": (120, 0, 60),
    "lower_lip": (200, 0, 255),
}
EYELID_COLOR: tuple[int, int, int] = (255, 255, 255)
IRIS_COLOR: tuple[int, int, int] = (255, 255, 0)

#: Colours for showing a full parsing map to a person (not used by the model).
PARSING_PALETTE: np.ndarray = np.array(
    [
        (0, 0, 0),
        (230, 190, 160),
        *[MOTION_PALETTE[name] for name in EXPRESSION_PARTS],
        (90, 60, 30),
        (70, 90, 160),
    ],
    dtype=np.uint8,
)
assert len(PARSING_PALETTE) == len(LABELS)


def label_mask(labels: np.ndarray, *names: str) -> np.ndarray:
    """Boolean mask of the pixels whose label is any of `names`."""
    return np.isin(labels, [LABEL_INDEX[n] for n in names])


def colorize(labels: np.ndarray) -> np.ndarray:
    """RGB picture of a parsing map, for people to look at."""
    return PARSING_PALETTE[labels]
