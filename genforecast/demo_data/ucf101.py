"""A procedural video set in UCF101's on-disk layout, for running the UCF101 pipeline without the real data.

Each video shows two or three textured shapes (discs, squares, triangles carrying stripes or checks) moving over
a textured background (a gradient, smooth noise or stripes) that may pan slowly. Shapes move at constant speed,
accelerate, or bounce fast, and rebound off the frame edges, so patches hold the translations, accelerations and
occlusions a next-frame predictor has to learn. Videos are MPEG-4 Part 2 (UCF101's codec family) in AVI, 25 fps,
yuv420p, at a bit rate high enough that decoding gives back the drawn frames up to chroma subsampling.

The layout and list formats are UCF101's (see :data:`datamodules.ucf101.UCF101_LAYOUT`): class folders under
``UCF-101/``, ``v_<Class>_gXX_cYY.avi`` files, and ``ucfTrainTestlist/`` with ``classInd.txt`` and the three
train/test lists, whole groups going to the test side as in UCF101. The set keeps UCF101's naming quirk: the
class folder ``HandstandPushups`` holds files named ``v_HandStandPushups_*``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

DEMO_CLASSES = ("HandstandPushups", "ApplyEyeMakeup", "Basketball", "Biking", "Diving", "JumpRope", "PlayingGuitar",
                "Rowing", "Surfing", "YoYo")
"""Real UCF101 class names the demo draws from, in the order they are used (the quirky class first)."""

FILE_CLASS_SPELLING = {"HandstandPushups": "HandStandPushups"}
"""Classes whose video file names spell the class differently from its folder, as in UCF101."""

FPS = 25
BIT_RATE = 8_000_000
SHAPE_KINDS = ("disc", "square", "triangle")
MOTIONS = ("constant", "accelerating", "bouncing")
BACKGROUNDS = ("gradient", "noise", "stripes")


@dataclass
class _Sprite:
    """A textured shape; position and velocity in pixels (y, x), size as circumradius."""

    kind: str
    radius: float
    position: np.ndarray
    velocity: np.ndarray
    acceleration: np.ndarray
    angle: float
    spin: float
    checks: bool
    period: float
    colors: np.ndarray

    def step(self, height: int, width: int) -> None:
        """Advance one frame, reflecting the velocity where the shape would leave the frame.

        Acceleration is constant, like gravity: an accelerating shape ends up bouncing off the wall it heads for.
        """
        self.velocity += self.acceleration
        self.position += self.velocity
        self.angle += self.spin
        for axis, limit in enumerate((height, width)):
            low, high = self.radius * 0.5, limit - self.radius * 0.5
            if self.position[axis] < low or self.position[axis] > high:
                self.position[axis] = np.clip(self.position[axis], low, high)
                self.velocity[axis] = -self.velocity[axis]

    def draw(self, frame: np.ndarray) -> None:
        """Alpha-composite the shape (anti-aliased edge, texture fixed to the shape) onto a float (H, W, 3) frame."""
        height, width = frame.shape[:2]
        reach = self.radius + 2
        top, bottom = max(int(self.position[0] - reach), 0), min(int(self.position[0] + reach) + 1, height)
        left, right = max(int(self.position[1] - reach), 0), min(int(self.position[1] + reach) + 1, width)
        if top >= bottom or left >= right:
            return
        rows, columns = np.mgrid[top:bottom, left:right].astype(np.float32)
        dy, dx = rows - self.position[0], columns - self.position[1]
        cos, sin = math.cos(self.angle), math.sin(self.angle)
        u, v = cos * dx + sin * dy, cos * dy - sin * dx
        if self.kind == "disc":
            inside = self.radius - np.hypot(u, v)
        elif self.kind == "square":
            inside = self.radius * 0.75 - np.maximum(np.abs(u), np.abs(v))
        else:
            inside = np.min([self.radius * 0.5 - (u * math.cos(normal) + v * math.sin(normal))
                             for normal in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3, math.pi / 2 + 4 * math.pi / 3)],
                            axis=0)
        alpha = np.clip(inside + 0.5, 0.0, 1.0)[..., None]
        wave = np.sin(2 * math.pi * u / self.period)
        if self.checks:
            wave = wave * np.sin(2 * math.pi * v / self.period)
        mix = np.clip(wave * 3.0 + 0.5, 0.0, 1.0)[..., None]
        texture = self.colors[0] * (1.0 - mix) + self.colors[1] * mix
        region = frame[top:bottom, left:right]
        region[...] = region * (1.0 - alpha) + texture * alpha


def _two_tones(rng: np.random.Generator) -> np.ndarray:
    """A random bright colour and a darker shade of it, float RGB (2, 3) in 0..255.

    Textures drawn with the two differ mostly in brightness, which yuv420p keeps at full resolution.
    """
    hsv = np.array([[[rng.uniform(0, 180), rng.uniform(100, 210), rng.uniform(140, 250)]]], dtype=np.uint8)
    light = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32)
    return np.stack([light, light * 0.45])


def _background(kind: str, rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A float (height, width, 3) background of the given kind."""
    rows, columns = np.mgrid[0:height, 0:width].astype(np.float32)
    high, low = _two_tones(rng) * 0.8 + 25
    angle = rng.uniform(0, math.pi)
    along = rows * math.sin(angle) + columns * math.cos(angle)
    if kind == "gradient":
        mix = (along - along.min()) / max(float(np.ptp(along)), 1.0)
    elif kind == "stripes":
        period = max(rng.uniform(0.05, 0.12) * max(height, width), 8.0)
        mix = 0.5 + 0.5 * np.sin(2 * math.pi * along / period)
    else:
        coarse = rng.uniform(0, 1, (max(height // 12, 2), max(width // 12, 2))).astype(np.float32)
        mix = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_CUBIC)
    mix = np.clip(mix, 0.0, 1.0)[..., None]
    return low * (1.0 - mix) + high * mix


def render_video(rng: np.random.Generator, frames: int, size: tuple[int, int], class_index: int = 0) -> np.ndarray:
    """Draw one clip as uint8 (frames, H, W, 3) RGB; ``class_index`` sets the first shape's kind and motion."""
    height, width = size
    scale = min(height, width)
    panning = rng.uniform() < 0.6
    pan = rng.uniform(-0.004, 0.004, 2) * scale if panning else np.zeros(2)
    margin = int(math.ceil(np.abs(pan).max() * frames)) + 1
    canvas = _background(BACKGROUNDS[int(rng.integers(len(BACKGROUNDS)))], rng, height + 2 * margin,
                         width + 2 * margin)
    sprites = []
    for number in range(int(rng.integers(2, 4))):
        kind = SHAPE_KINDS[class_index % 3] if number == 0 else SHAPE_KINDS[int(rng.integers(3))]
        motion = MOTIONS[class_index % 3] if number == 0 else MOTIONS[int(rng.integers(3))]
        radius = float(rng.uniform(0.12, 0.2) * scale)
        direction = rng.uniform(0, 2 * math.pi)
        speed = rng.uniform(0.02, 0.035 if motion == "bouncing" else 0.02) * scale
        if motion == "constant":
            speed *= 0.6
        heading = np.array([math.sin(direction), math.cos(direction)], dtype=np.float64)
        acceleration = (np.zeros(2) if motion == "constant" else
                        heading * 0.002 * scale if motion == "accelerating" else np.array([0.004 * scale, 0.0]))
        sprites.append(_Sprite(kind=kind, radius=radius,
                               position=np.array([rng.uniform(radius, height - radius),
                                                  rng.uniform(radius, width - radius)]),
                               velocity=heading * speed, acceleration=acceleration,
                               angle=float(rng.uniform(0, 2 * math.pi)), spin=float(rng.uniform(-0.05, 0.05)),
                               checks=bool(rng.uniform() < 0.5), period=float(radius * rng.uniform(0.4, 0.7)),
                               colors=_two_tones(rng)))
    video = np.empty((frames, height, width, 3), dtype=np.uint8)
    for index in range(frames):
        top, left = (margin + np.round(pan * index)).astype(int)
        frame = canvas[top:top + height, left:left + width].copy()
        for sprite in sprites:
            sprite.draw(frame)
            sprite.step(height, width)
        video[index] = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
    return video


def write_video(path: str | Path, frames: np.ndarray, fps: int = FPS) -> Path:
    """Encode uint8 (N, H, W, 3) RGB frames with MPEG-4 Part 2, yuv420p, to ``path`` (container from its suffix).

    H and W must be even (yuv420p).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.bit_rate = BIT_RATE
        for pixels in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")))
        container.mux(stream.encode())
    return path


def fold_test_groups(fold: int, groups: int) -> set[int]:
    """The 1-based groups on the test side of ``fold`` (1..3): groups g with (g - 1) % 3 == fold - 1.

    With fewer than three groups the folds cycle over the groups, so every fold has a test and a train group.
    """
    cycle = min(3, groups)
    return {group for group in range(1, groups + 1) if (group - 1) % cycle == (fold - 1) % cycle}


def video_name(class_name: str, group: int, clip: int) -> str:
    """Relative path of a video, as the split lists spell it: ``<Class>/v_<FileClass>_gXX_cYY.avi``."""
    return f"{class_name}/v_{FILE_CLASS_SPELLING.get(class_name, class_name)}_g{group:02d}_c{clip:02d}.avi"


def write_ucf101(root: str | Path, classes: int = 3, groups: int = 4, clips_per_group: int = 2, frames: int = 24,
                 size: tuple[int, int] = (240, 320), seed: int = 0) -> Path:
    """Write ``classes`` x ``groups`` x ``clips_per_group`` videos of ``frames`` frames of ``size`` = (H, W).

    Classes are the first ``classes`` of :data:`DEMO_CLASSES` (always including ``HandstandPushups``), numbered
    alphabetically in ``classInd.txt`` as in UCF101. Group ``g`` is on the test side of fold ``k`` when
    :func:`fold_test_groups` says so. List lines end in CRLF. Each video has its own random stream, so the set is
    deterministic given ``seed``. Returns ``root``.
    """
    if not 1 <= classes <= len(DEMO_CLASSES) or groups < 2 or clips_per_group < 1 or frames < 1:
        raise ValueError(f"need 1 <= classes <= {len(DEMO_CLASSES)}, groups >= 2, clips_per_group >= 1 and "
                         f"frames >= 1, got {classes}, {groups}, {clips_per_group}, {frames}")
    if size[0] % 2 or size[1] % 2:
        raise ValueError(f"frame size must be even (yuv420p), got {size}")
    root = Path(root)
    class_names = sorted(DEMO_CLASSES[:classes], key=str.lower)
    for label, class_name in enumerate(class_names):
        style = DEMO_CLASSES.index(class_name)
        for group in range(1, groups + 1):
            for clip in range(1, clips_per_group + 1):
                rng = np.random.default_rng([seed, style, group, clip])
                write_video(root / "UCF-101" / video_name(class_name, group, clip),
                            render_video(rng, frames, size, class_index=label))
    lists = root / "ucfTrainTestlist"
    lists.mkdir(parents=True, exist_ok=True)
    _write_lines(lists / "classInd.txt", [f"{label + 1} {name}" for label, name in enumerate(class_names)])
    for fold in (1, 2, 3):
        testing = fold_test_groups(fold, groups)
        train_lines, test_lines = [], []
        for label, class_name in enumerate(class_names):
            for group in range(1, groups + 1):
                for clip in range(1, clips_per_group + 1):
                    name = video_name(class_name, group, clip)
                    if group in testing:
                        test_lines.append(name)
                    else:
                        train_lines.append(f"{name} {label + 1}")
        _write_lines(lists / f"trainlist0{fold}.txt", train_lines)
        _write_lines(lists / f"testlist0{fold}.txt", test_lines)
    return root


def _write_lines(path: Path, lines: list[str]) -> None:
    path.write_bytes("".join(f"{line}\r\n" for line in lines).encode())
