"""``human-study serve``: run the rating app on one study folder with uvicorn, one server per study.

The server binds its socket itself (so ``--port 0`` picks a free port and the printed URL is the real one),
takes the study's :class:`ServerLock` first (a second server on the same study is refused), and prints the
raters' link and the admin link with its token. It listens on 127.0.0.1 unless told otherwise: to let
colleagues on the local network take part, pass ``--host 0.0.0.0`` (and share the raters' link, not the admin one).
"""

from __future__ import annotations

import socket
import sys
from pathlib import Path

from genforecast.human_study.security import Keys
from genforecast.human_study.storage import ServerLock


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def serve(study_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, log_level: str = "warning") -> None:
    """Serve the study until interrupted (Ctrl-C stops it cleanly; every committed answer is already on disk)."""
    import uvicorn

    from genforecast.human_study.app import create_app
    from genforecast.human_study.create import SECRETS_NAME

    study_dir = Path(study_dir)
    with ServerLock(study_dir):
        app = create_app(study_dir)
        sock = bind(host, port)
        bound_host, bound_port = sock.getsockname()[:2]
        shown = "127.0.0.1" if bound_host in ("0.0.0.0", "::") else bound_host
        base = f"http://[{shown}]:{bound_port}" if ":" in shown else f"http://{shown}:{bound_port}"
        token = Keys.read(study_dir / SECRETS_NAME).admin_token
        print(f"human study {study_dir} served at {base}/", flush=True)
        print(f"raters open: {base}/", flush=True)
        print(f"admin (progress, exports): {base}/admin?token={token}", flush=True)
        config = uvicorn.Config(app, log_level=log_level, access_log=False, timeout_graceful_shutdown=5)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        finally:
            sock.close()
            app.state.study.db.close()
        print("server stopped", file=sys.stderr, flush=True)
