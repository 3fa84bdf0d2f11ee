"""Make ``examples/driving_grace_hopper.mp4``, the example driving clip (see examples/README.md).

A 512x512 square of the public-domain Grace Hopper portrait (rows 48-559: her face) moves with
the known affine motion of :mod:`float_core.media.head_motion` (roll, sway, nod, zoom) for as
long as a short CC0 voice made with eSpeak NG (``VOICE_TEXT``), which is muxed in: 256x256
pixels, 25 fps, H.264 + AAC (16 kHz mono). The mouth does not follow the voice: the clip is for
driving (head motion) and dubbing (new lips). Needs ``espeak-ng`` (Debian package).

    python examples/make_driving_clip.py
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from float_core.config import SAMPLE_RATE, SAMPLES_PER_FRAME  # noqa: E402
from float_core.media.audio import load_audio  # noqa: E402
from float_core.media.head_motion import write_head_motion_video  # noqa: E402
from float_core.media.image import load_image  # noqa: E402

VOICE_TEXT = "Good morning. Let me show you how I move."
ESPEAK = ["espeak-ng", "-v", "en-us+f3", "-s", "160"]


def main() -> None:
    portrait = load_image(HERE / "portrait_grace_hopper.jpg")[48:560, :512]
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "voice.wav"
        subprocess.run([*ESPEAK, "-w", str(wav), VOICE_TEXT], check=True)
        voice = load_audio(wav, target_rate=SAMPLE_RATE)
    frames = math.ceil(voice.shape[0] / SAMPLES_PER_FRAME)
    out = write_head_motion_video(HERE / "driving_grace_hopper.mp4", portrait, frames, side=256,
                                  audio=(voice, SAMPLE_RATE), crf=26, preset="veryslow")
    print(f"{out}: {frames} frames, {out.stat().st_size / 1024:.0f} KB")


if __name__ == "__main__":
    main()
