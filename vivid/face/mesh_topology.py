"""Which of MediaPipe's 478 face-mesh points outline which face part.

MediaPipe names sides from the subject's point of view; here the lists are named by the
subject's side too (`SUBJECT_RIGHT_*` is image-left on an unmirrored photo), and the
rasteriser decides image-left/right from the actual positions, so mirrored input works.
"""
from __future__ import annotations

NUM_POINTS = 478

# Closed eyelid contours, starting at the outer corner, upper lid first.
SUBJECT_RIGHT_EYE = (33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163, 7)
SUBJECT_LEFT_EYE = (263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390, 249)
# Iris: centre first, then four points on its rim.
SUBJECT_RIGHT_IRIS = (468, 469, 470, 471, 472)
SUBJECT_LEFT_IRIS = (473, 474, 475, 476, 477)

# Closed brow outlines: upper edge outer-to-inner, then lower edge inner-to-outer.
SUBJECT_RIGHT_BROW = (70, 63, 105, 66, 107, 55, 65, 52, 53, 46)
SUBJECT_LEFT_BROW = (300, 293, 334, 296, 336, 285, 295, 282, 283, 276)

# Lip edges, each from mouth corner 61 to mouth corner 291 (or inner corners 78 to 308).
OUTER_UPPER_LIP = (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291)
OUTER_LOWER_LIP = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291)
INNER_UPPER_LIP = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
INNER_LOWER_LIP = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308)

# Points on the nose (bridge, tip, wings); the nose region is their convex hull.
NOSE = (
    168, 6, 197, 195, 5, 4, 1, 19, 94, 2, 122, 351, 188, 412, 217, 437, 198, 420,
    131, 360, 49, 279, 48, 278, 64, 294, 98, 327, 97, 326, 129, 358, 102, 331,
    115, 344, 219, 439, 240, 460, 75, 305,
)

# Face outline, clockwise from the top of the forehead.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
    377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)
FOREHEAD_TOP = 10
CHIN = 152

# The five points facer's FaRL models align on: eyes, nose tip, mouth corners.
FIVE_POINT_EYE_CONTOURS = (SUBJECT_RIGHT_EYE, SUBJECT_LEFT_EYE)
NOSE_TIP = 1
MOUTH_CORNERS = (61, 291)
