"""Write tests/data/media: small videos made here, in the containers, codecs and damage the runtime must handle.

    python tests/data/make_media.py            # needs the ffmpeg command line tool (Debian: apt-get install ffmpeg)

Run by hand, not by the tests: the files are committed, so the tests need no encoder and see the same bytes on
every machine. Every frame is drawn here with numpy (a brightness ramp over time, so frame order is checkable, and
a moving square); damage is deterministic byte surgery. `media.json` records, per file, what a reader must get:
the number of frames written (every one must decode, whatever the container claims), the upright size, and for
damaged files the frames the container claims or the start of the error the reader must raise.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "media"


def frames(n: int, width: int, height: int) -> np.ndarray:
    """n RGB frames: frame i has mean brightness rising with i, and a white square moving left to right."""
    out = np.empty((n, height, width, 3), np.uint8)
    for i in range(n):
        out[i] = 30 + int(190 * i / max(n - 1, 1))
        side = max(1, min(width, height) // 4)
        x = int((width - side) * i / max(n - 1, 1))
        out[i, (height - side) // 2:(height - side) // 2 + side, x:x + side] = 255
    return out


def ffmpeg(name: str, n: int, width: int, height: int, fps: str, video: list[str], audio: list[str] | None = None,
           post: list[str] | None = None, to_pipe: bool = False) -> Path:
    """Encode frames(n, width, height) with ffmpeg; audio is a sine tone from ffmpeg's lavfi source."""
    path = OUT / name
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
           "-r", fps, "-i", "-"]
    if audio is not None:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=44100:duration={n / eval(fps):.3f}"]
    cmd += ["-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact"]
    cmd += video + (audio or []) + (post or [])
    if to_pipe:  # a non-seekable output: the muxer cannot go back to write the duration or the cues
        cmd += ["-f", Path(name).suffix.lstrip("."), "pipe:1"]
        data = subprocess.run(cmd, input=frames(n, width, height).tobytes(), capture_output=True, check=True).stdout
        path.write_bytes(data)
    else:
        subprocess.run(cmd + [str(path)], input=frames(n, width, height).tobytes(), check=True)
    return path


def opencv(name: str, fourcc: str, n: int, width: int, height: int, fps: float) -> Path:
    import cv2

    path = OUT / name
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise SystemExit(f"OpenCV cannot write {fourcc} here")
    for frame in frames(n, width, height):
        writer.write(frame[..., ::-1].copy())
    writer.release()
    return path


def damage_tail(path: Path, keep: float) -> None:
    """Cut the file to `keep` of its length (an interrupted copy or download)."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def packets(path: Path, stream: str) -> list[tuple[int, int]]:
    """(byte position, size) of every packet of one stream ("a:0", "v:0"), from ffprobe."""
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", stream, "-show_entries", "packet=pos,size",
                          "-of", "json", str(path)], capture_output=True, text=True, check=True).stdout
    return [(int(p["pos"]), int(p["size"])) for p in json.loads(out)["packets"] if p.get("pos", "N/A") != "N/A"]


def set_rotation(path: Path, angle: int, width: int, height: int) -> None:
    """Write the QuickTime display matrix for a clockwise rotation into the (only) track header, as phones do.

    Matrix entries a, b, u, c, d, v, x, y, w: 16.16 fixed point except u, v, w (2.30); x, y translate the rotated
    picture back into view.
    """
    one, w30 = 1 << 16, 1 << 30
    matrix = {0: (one, 0, 0, 0, one, 0, 0, 0, w30),
              90: (0, one, 0, -one, 0, 0, height * one, 0, w30),
              180: (-one, 0, 0, 0, -one, 0, width * one, height * one, w30),
              270: (0, -one, 0, one, 0, 0, 0, width * one, w30)}[angle]
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    if at < 0 or data.find(b"tkhd", at + 4) >= 0:
        raise SystemExit(f"{path}: expected exactly one track header")
    # After the type: version/flags, then times, track id and duration (4 bytes each in version 0, some 8 in 1).
    offset = at + (44 if data[at + 4] == 0 else 56)
    data[offset:offset + 36] = struct.pack(">9i", *matrix)
    path.write_bytes(bytes(data))


def scramble(path: Path, spans: list[tuple[int, int]], seed: int) -> None:
    """Overwrite the given byte spans with seeded noise (a damaged stream inside an intact container)."""
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(seed)
    for pos, size in spans:
        data[pos:pos + size] = rng.integers(0, 256, size, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))


def main() -> int:
    if not shutil.which("ffmpeg") or not shutil.which("ffprobe"):
        print("needs ffmpeg and ffprobe on PATH (Debian: apt-get install ffmpeg)", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    for old in OUT.iterdir():
        old.unlink()
    x264 = ["-c:v", "libx264", "-preset", "veryslow", "-crf", "30", "-pix_fmt", "yuv420p", "-threads", "1"]
    table: dict[str, dict] = {}

    def add(path: Path, what: str, frames: int | None = None, size: tuple[int, int] | None = None,
            **facts) -> None:
        table[path.name] = {"what": what, "frames": frames, "size": list(size) if size else None, **facts}

    add(ffmpeg("h264_340x256_30fps.mp4", 40, 340, 256, "30", x264), "H.264 in MP4, 30 fps", 40, (256, 340))
    add(ffmpeg("h264_bframes_50x50.mov", 8, 50, 50, "32", x264 + ["-bf", "3", "-g", "8", "-x264-params",
                                                                   "b-pyramid=none"]),
        "H.264 with B-frames in QuickTime: decode order differs from display order", 8, (50, 50))
    for angle in (0, 90, 180, 270):
        upright = (320, 568) if angle in (0, 180) else (568, 320)
        rotated = ffmpeg(f"h264_rotate{angle}_568x320.mov", 3, 568, 320, "30", x264)
        set_rotation(rotated, angle, 568, 320)
        add(rotated, f"H.264 stored landscape 568x320 with display rotation {angle} degrees in the track header", 3, upright,
            rotation=angle, stored_size=[320, 568])
    add(ffmpeg("h264_aac_1920x1080_25fps.mp4", 25, 1920, 1080, "25", x264, ["-c:a", "aac", "-b:a", "32k"]),
        "full HD H.264 with AAC audio", 25, (1080, 1920))
    add(ffmpeg("h264_1920x1080.avi", 20, 1920, 1080, "30", x264), "full HD H.264 in AVI", 20, (1080, 1920))
    add(ffmpeg("h264_ntsc_29.97fps.mp4", 30, 426, 240, "30000/1001", x264), "H.264 at NTSC 30000/1001 fps", 30,
        (240, 426))
    add(ffmpeg("h264_1x1.mp4", 5, 1, 1, "1", ["-c:v", "libx264", "-pix_fmt", "yuv444p", "-threads", "1"]),
        "a 1x1 pixel H.264 video, 5 frames at 1 fps", 5, (1, 1))
    add(ffmpeg("h264_opus.mkv", 30, 426, 240, "30", x264, ["-c:a", "libopus", "-b:a", "16k"]),
        "H.264 and Opus in Matroska", 30, (240, 426))
    add(ffmpeg("vp8_vorbis.webm", 24, 320, 180, "24", ["-c:v", "libvpx", "-b:v", "100k", "-threads", "1"],
               ["-c:a", "libvorbis", "-q:a", "0"]), "VP8 and Vorbis in WebM", 24, (180, 320))
    add(ffmpeg("vp9_opus_no_duration.webm", 30, 320, 180, "15000/1001",
               ["-c:v", "libvpx-vp9", "-b:v", "100k", "-threads", "1"], ["-c:a", "libopus", "-b:a", "16k"],
               to_pipe=True),
        "VP9 and Opus in WebM written to a pipe: no duration and no cues in the header (as a browser recorder "
        "writes), so the container's frame count is meaningless", 30, (180, 320))
    add(ffmpeg("mpeg4_mp3.avi", 40, 320, 240, "25", ["-c:v", "mpeg4", "-q:v", "8", "-threads", "1"],
               ["-c:a", "libmp3lame", "-b:a", "32k"]), "MPEG-4 part 2 and MP3 in AVI", 40, (240, 320))
    add(ffmpeg("mpeg2.mpg", 20, 352, 288, "25", ["-c:v", "mpeg2video", "-q:v", "8", "-threads", "1"]),
        "MPEG-2 program stream (.mpg)", 20, (288, 352))
    add(ffmpeg("h263.3gp", 10, 176, 144, "15", ["-c:v", "h263", "-q:v", "8"]), "H.263 in 3GP", 10, (144, 176))
    add(ffmpeg("flv1.flv", 10, 160, 120, "15", ["-c:v", "flv", "-q:v", "8"]), "Sorenson Spark in FLV", 10,
        (120, 160))
    add(ffmpeg("wmv2.wmv", 10, 160, 120, "15", ["-c:v", "wmv2", "-q:v", "8"]), "Windows Media Video 8 in ASF",
        10, (120, 160))
    add(ffmpeg("theora.ogv", 10, 160, 120, "15", ["-c:v", "libtheora", "-q:v", "3"]), "Theora in Ogg", 10,
        (120, 160))
    add(opencv("mjpg_opencv.avi", "MJPG", 10, 64, 48, 10.0), "Motion JPEG in AVI, written by OpenCV", 10, (48, 64))
    add(opencv("mp4v_opencv.mp4", "mp4v", 10, 64, 48, 10.0), "MPEG-4 part 2 in MP4, written by OpenCV", 10,
        (48, 64))

    # Damaged files.
    cut = ffmpeg("h264_faststart_cut.mp4", 50, 320, 180, "10", x264, post=["-movflags", "+faststart"])
    damage_tail(cut, 0.6)
    add(cut, "H.264 MP4 with the index first, cut at 60% of its bytes: the container still claims 50 frames, the "
             "data breaks part way", None, (180, 320), claimed_frames=50)
    audio = ffmpeg("h264_broken_audio.mp4", 25, 640, 360, "25", x264, ["-c:a", "libmp3lame", "-b:a", "32k"])
    scramble(audio, packets(audio, "a:0"), seed=7)
    add(audio, "H.264 and MP3 in MP4 with every audio packet overwritten by noise: the video must still decode",
        25, (360, 640))
    late = ffmpeg("h264_index_at_end_cut.mp4", 20, 320, 180, "10", x264)
    damage_tail(late, 0.5)
    add(late, "H.264 MP4 with the index (moov) at the end, cut in half: the index is gone", error="cannot be opened")
    add(opencv("zero_frames.avi", "MJPG", 0, 64, 48, 10.0), "an AVI with a Motion JPEG track and no frame "
        "(a recorder stopped before the first frame)", error="no decodable frames")
    sound = OUT / "audio_only.m4a"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                    "-c:a", "aac", "-b:a", "32k", "-map_metadata", "-1", "-fflags", "+bitexact", str(sound)], check=True)
    add(sound, "audio only, no video track", error="cannot be opened")

    version = subprocess.run(["ffmpeg", "-version"], capture_output=True, text=True).stdout.splitlines()[0]
    (OUT / "media.json").write_text(json.dumps({"made_with": version, "files": table}, indent=1) + "\n")
    total = sum(p.stat().st_size for p in OUT.iterdir())
    print(f"wrote {len(table)} files, {total / 1024:.0f} KiB, into {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
