"""Shared helpers of the human-study tests: tiny checkpoints, small studies, live servers, a scripted rater.

Not a conftest: the suite's tests import the top-level ``conftest`` by name, which a second conftest module
would shadow. Expensive objects are cached at module level, so every test module that uses them shares one.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from genforecast.human_study.config import CONTROL, StudyConfig
from genforecast.human_study.create import StudyImage, write_study

REPO_ROOT = Path(__file__).resolve().parents[3]
VARIANTS = ("gan", "can", "canh")
_CACHE: dict[str, Any] = {}


def tiny_checkpoints(root: Path) -> dict[str, Path]:
    """Untrained 32 px FashionCAN checkpoints, saved directly from the modules (no training run needed):
    ``gan`` (DCGAN, with a metric classifier in its weights, as trained checkpoints have), ``canh`` (holistic
    loss) and ``canh_shape`` (shape-conditioned generator)."""
    if "checkpoints" not in _CACHE:
        import lightning
        import torch

        from lightning_modules.fashion_can import FashionCAN
        from networks.classifier import ShapeTextureResNet, export_classifier

        root.mkdir(parents=True, exist_ok=True)
        classifier = export_classifier(ShapeTextureResNet(7, 7), root / "metric_classifier.pt")
        paths = {}
        settings = {"gan": {"classifier_weights": str(classifier)}, "canh": {"creativity": "holistic"},
                    "canh_shape": {"creativity": "holistic", "conditioning": "shape_mask"}}
        for seed, (variant, options) in enumerate(settings.items()):
            torch.manual_seed(seed)
            module = FashionCAN(resolution=32, latent_dim=16, base_channels=8, sample_grid_size=4, **options)
            paths[variant] = root / f"{variant}.ckpt"
            torch.save({"state_dict": module.state_dict(), "hyper_parameters": dict(module.hparams),
                        "pytorch-lightning_version": lightning.__version__}, paths[variant])
        _CACHE["checkpoints"] = paths
    return _CACHE["checkpoints"]


def created_study(root: Path, catalogue: Path, classifier: Path) -> Path:
    """A study made by ``create_study`` from the tiny checkpoints (6 images per variant, 6 controls). Read-only:
    copy it (:func:`copy_study`) before answering."""
    if "created" not in _CACHE:
        from genforecast.human_study.create import create_study

        config = StudyConfig(catalogue=catalogue, classifier=classifier, variants=tiny_checkpoints(root / "ckpt"),
                             images_per_variant=6, controls=6, ratings_per_rater=4, pairs_per_rater=2, seed=0)
        _CACHE["created"] = create_study(config, root / "created")
    return _CACHE["created"]


def copy_study(study: Path, target: Path) -> Path:
    """A fresh copy of a study folder (without any server lock file)."""
    shutil.copytree(study, target, ignore=shutil.ignore_patterns("server.lock", "report"))
    return target


def catalogue_pixels(catalogue: Path, count: int, size: int = 32) -> list[np.ndarray]:
    """``count`` garment pictures of the procedural catalogue at ``size`` px (so screenshots show garments)."""
    from PIL import Image

    files = sorted((catalogue / "images").glob("*.png"))
    return [np.asarray(Image.open(files[index % len(files)]).convert("RGB").resize((size, size))) for index in
            range(count)]


def synthetic_study(path: Path, per_variant: int = 10, controls: int = 10, variants: tuple[str, ...] = VARIANTS,
                    catalogue: Path | None = None, scores: bool = True, seed: int = 0, size: int = 32,
                    **settings: Any) -> Path:
    """A study folder written directly (no generation): distinct ``size`` px images per variant and controls.

    Images are random noise, or recoloured catalogue garments when ``catalogue`` is given; generated images get
    random automatic novelty scores when ``scores``. ``settings`` override :class:`StudyConfig` fields.
    """
    rng = np.random.default_rng(seed)
    groups = [(variant, "generated") for variant in variants] + [(CONTROL, "control")]
    counts = [per_variant] * len(variants) + [controls]
    total = sum(counts)
    base = catalogue_pixels(catalogue, total, size) if catalogue is not None else [
        rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(total)]
    images, index = [], 0
    for (group, kind), count in zip(groups, counts):
        for number in range(count):
            pixels = base[index].copy()
            pixels[0, 0] = (255, 255 - index // 256 % 256, 255 - index % 256)  # all distinct, barely visible
            index += 1
            image_scores = {"novelty_nn": float(rng.gamma(4.0, 2.0)), "shape_entropy": float(rng.uniform(0, 2)),
                            "texture_entropy": float(rng.uniform(0, 2))} if scores and kind == "generated" else {}
            images.append(StudyImage(pixels, kind, group, f"synthetic {group} {number}", image_scores))
    config = StudyConfig(catalogue=path / "no-catalogue", variants={v: path / f"{v}.ckpt" for v in variants},
                         name="synthetic", **settings)
    return write_study(path, config, images, resolution=size)


# ---- live servers --------------------------------------------------------------------------------------------


def starlette_test_client() -> type:
    """Starlette's TestClient, imported without its notice that it prefers the ``httpx2`` package."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*httpx2.*")
        from fastapi.testclient import TestClient
    return TestClient


@contextmanager
def server_thread(study: Path) -> Iterator[str]:
    """A real uvicorn server for ``study`` on 127.0.0.1 (a free port) in a thread; yields its base URL."""
    import uvicorn

    from genforecast.human_study.app import create_app
    from genforecast.human_study.serve import bind

    app = create_app(study)
    sock = bind("127.0.0.1", 0)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()
        app.state.study.db.close()


def start_server_process(study: Path) -> tuple[subprocess.Popen, str]:
    """``python -m genforecast.human_study serve <study> --port 0`` as a child process; returns it and its URL
    once it answers requests."""
    import httpx

    process = subprocess.Popen([sys.executable, "-m", "genforecast.human_study", "serve", str(study), "--port", "0"],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    url = None
    deadline = time.monotonic() + 60
    for line in process.stdout:
        match = re.search(r"served at (http://\S+?)/?$", line.strip())
        if match:
            url = match.group(1)
            break
        if time.monotonic() > deadline:
            break
    if url is None:
        process.kill()
        raise RuntimeError(f"the server did not start: {process.stdout.read() if process.stdout else ''}")
    threading.Thread(target=process.stdout.read, daemon=True).start()  # keep draining its output
    while time.monotonic() < deadline:
        try:
            httpx.get(url + "/", timeout=2)
            return process, url
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the server did not answer")


# ---- a scripted rater ----------------------------------------------------------------------------------------

HIDDEN = re.compile(r'name="(assignment|csrf)" value="([^"]*)"')


def hidden_fields(html: str) -> dict[str, str]:
    return dict(HIDDEN.findall(html))


def task_of(html: str) -> str:
    """``rate``, ``pair`` or ``done`` for a page returned by ``GET /rate``."""
    if 'id="answer-form"' in html:
        return "rate"
    if 'id="pair-form"' in html:
        return "pair"
    assert 'id="done"' in html, html[:500]
    return "done"


def join(client: Any) -> None:
    """Consent through the start page with ``client`` (an httpx or TestClient client, cookies kept)."""
    page = client.get("/")
    assert page.status_code == 200
    response = client.post("/consent", data={"csrf": hidden_fields(page.text)["csrf"], "agree": "yes"},
                           follow_redirects=False)
    assert response.status_code == 303, response.text


def answer_for(task: str, rng: np.random.Generator) -> dict[str, str]:
    """Random valid form values for a task."""
    if task == "rate":
        return {"likability": str(rng.integers(1, 6)), "novelty": str(rng.integers(1, 6)),
                "origin": "human" if rng.random() < 0.5 else "computer", "client_ms": str(rng.integers(500, 9000))}
    return {"choice": "left" if rng.random() < 0.5 else "right"}
