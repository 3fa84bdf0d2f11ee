"""Media I/O for FLOAT Studio: portraits in, speech in, MP4 out.

* :mod:`.image` - load any photo as upright RGB ``uint8``.
* :mod:`.face`  - face detection, FLOAT's crop rule, crop preview, paste-back.
* :mod:`.audio` - decode any audio/video file to 16 kHz mono float32.
* :mod:`.video` - stream frames + speech into an H.264/AAC MP4, atomically.

Heavy dependencies (PyAV, soxr, the face detector) are imported lazily, so
importing this package is cheap.
"""

from float_core.media.audio import AudioError, AudioWarning, load_audio
from float_core.media.face import (
    CropBox,
    CropResult,
    FaceDetection,
    NoFaceError,
    PasteBack,
    crop_box_for_face,
    crop_portrait,
    detect_faces,
    draw_crop_preview,
)
from float_core.media.image import ImageError, load_image
from float_core.media.video import VideoWriter, probe_video

__all__ = [
    "AudioError",
    "AudioWarning",
    "CropBox",
    "CropResult",
    "FaceDetection",
    "ImageError",
    "NoFaceError",
    "PasteBack",
    "VideoWriter",
    "crop_box_for_face",
    "crop_portrait",
    "detect_faces",
    "draw_crop_preview",
    "load_audio",
    "load_image",
    "probe_video",
]
