"""A stand-in for the Hugging Face Hub on loopback, serving what huggingface_hub asks of it.

Read from huggingface_hub 2.4's `file_download.py`, `utils/_http.py` and `hf_api.py`:

- `HEAD /OWNER/REPO/resolve/REV/FILE` must carry `X-Repo-Commit` (the commit REV is;
  without it the library refuses the endpoint) and an ETag. For a file in LFS, as every
  GGUF file is, the hub answers 302 to a CDN of another origin with `X-Linked-Etag`
  (the sha256: the blob's name in the cache) and `X-Linked-Size`; the library stops at a
  redirect off the hub's origin, takes the metadata from it, and later GETs the CDN URL
  without the token. The size is how it decides a download is complete.
- The CDN honours `Range: bytes=N-` with 206 and `Content-Range`: after a cut connection
  the library asks for the rest, in the same call. Its `Content-Disposition` names the
  file on the progress bar.
- Errors are told apart by `X-Error-Code`: `RepoNotFound` (401), `GatedRepo` (401
  without a token), `RevisionNotFound` and `EntryNotFound` (404, the latter with
  `X-Repo-Commit`).
- `GET /api/models/OWNER/REPO/tree/REV?recursive=...` lists a repository's files as JSON
  (`HfApi.list_repo_files`), one page when there is no `Link: <...>; rel="next"`.

Every request is recorded; a test stops the stand-in to take the network away.
"""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import attrs

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@attrs.frozen
class Request:
    origin: str  # "hub" or "cdn"
    method: str
    path: str
    range: str | None
    authorized: bool


@attrs.define
class Repo:
    files: dict[str, bytes]
    commit: str = COMMIT
    branches: tuple[str, ...] = ("main",)
    token: str | None = None  # gated: only this bearer token is let in
    # What the CDN sends instead of a file's bytes while the hub still announces the file's
    # own sha256 and size: a hub or mirror serving an altered file.
    served: dict[str, bytes] = attrs.Factory(dict)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class StandIn:
    """The hub (`url`, what HF_ENDPOINT names) and its CDN, each an HTTP server of its own."""

    def __init__(self, repos: dict[str, Repo]) -> None:
        self.repos = repos
        self.requests: list[Request] = []
        # Bytes sent before each next CDN GET is cut (0: the headers, then nothing).
        self.cuts: list[int] = []
        self._lock = threading.Lock()
        self._blobs = {
            sha256(data): repo.served.get(name, data)
            for repo in repos.values()
            for name, data in repo.files.items()
        }
        self._hub = self._serve("hub")
        self._cdn = self._serve("cdn")
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self._cdn_url = f"http://127.0.0.1:{self._cdn.server_address[1]}"

    def _serve(self, origin: str) -> ThreadingHTTPServer:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def do_HEAD(self) -> None:
                standin._answer(self, origin, body=False)

            def do_GET(self) -> None:
                standin._answer(self, origin, body=True)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def stop(self) -> None:
        """Close both servers: from now on every connection is refused."""
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    def downloads(self) -> list[Request]:
        """The GETs of file content (from the CDN)."""
        return [r for r in self.requests if r.origin == "cdn" and r.method == "GET"]

    # -- answers ---------------------------------------------------------------

    def _answer(self, handler: BaseHTTPRequestHandler, origin: str, *, body: bool) -> None:
        # Split before decoding: a revision with a "/" in it comes percent-encoded.
        raw = urlsplit(handler.path).path
        path, parts = unquote(raw), [unquote(part) for part in raw.strip("/").split("/")]
        authorization = handler.headers.get("Authorization")
        with self._lock:
            self.requests.append(
                Request(
                    origin, handler.command, path, handler.headers.get("Range"), bool(authorization)
                )
            )
        if origin == "cdn":
            name = parse_qs(urlsplit(handler.path).query).get("name", ["file"])[0]
            self._blob(handler, path.removeprefix("/blobs/"), name, body=body)
            return
        if parts[:2] == ["api", "models"] and len(parts) >= 6 and parts[4] == "tree":
            repo = self._repo(handler, f"{parts[2]}/{parts[3]}", parts[5], authorization)
            if repo is not None:
                self._tree(handler, repo)
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo = self._repo(handler, f"{parts[0]}/{parts[1]}", parts[3], authorization)
            if repo is not None:
                self._resolve(handler, repo, "/".join(parts[4:]))
        else:
            self._send(handler, 404, {"X-Error-Message": "no such endpoint here"})

    def _repo(
        self,
        handler: BaseHTTPRequestHandler,
        repo_id: str,
        revision: str,
        authorization: str | None,
    ) -> Repo | None:
        """The repo when it may be read at that revision; otherwise the error is sent."""
        repo = self.repos.get(repo_id)
        if repo is None:
            self._send(
                handler,
                401,
                {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"},
            )
            return None
        if repo.token is not None and authorization != f"Bearer {repo.token}":
            message = (
                f"Access to model {repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in."
            )
            self._send(handler, 401, {"X-Error-Code": "GatedRepo", "X-Error-Message": message})
            return None
        if revision not in (*repo.branches, repo.commit):
            self._send(
                handler,
                404,
                {"X-Error-Code": "RevisionNotFound", "X-Error-Message": "Invalid rev id"},
            )
            return None
        return repo

    def _resolve(self, handler: BaseHTTPRequestHandler, repo: Repo, filename: str) -> None:
        data = repo.files.get(filename)
        if data is None:
            headers = {
                "X-Error-Code": "EntryNotFound",
                "X-Error-Message": "Entry not found",
                "X-Repo-Commit": repo.commit,
            }
            self._send(handler, 404, headers)
            return
        digest = sha256(data)
        self._send(
            handler,
            302,
            {
                # As a signed CDN URL does, it names the file for the Content-Disposition.
                "Location": f"{self._cdn_url}/blobs/{digest}?name={quote(filename.split('/')[-1])}",
                "X-Repo-Commit": repo.commit,
                "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                "X-Linked-Etag": f'"{digest}"',
                "X-Linked-Size": str(len(data)),
            },
        )

    def _tree(self, handler: BaseHTTPRequestHandler, repo: Repo) -> None:
        entries = [
            {
                "type": "file",
                "path": name,
                "size": len(data),
                "oid": hashlib.sha1(data).hexdigest(),
                "lfs": {"oid": sha256(data), "size": len(data), "pointerSize": 134},
            }
            for name, data in sorted(repo.files.items())
        ]
        body = json.dumps(entries).encode()
        self._send(handler, 200, {"Content-Type": "application/json"}, body)

    def _blob(self, handler: BaseHTTPRequestHandler, digest: str, name: str, *, body: bool) -> None:
        data = self._blobs.get(digest)
        if data is None:
            self._send(handler, 404, {})
            return
        start, status = 0, 200
        wanted = handler.headers.get("Range")
        if wanted is not None and wanted.startswith("bytes=") and wanted.endswith("-"):
            start, status = int(wanted[len("bytes=") : -1]), 206
        headers = {
            "Content-Length": str(len(data) - start),
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";",
        }
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        with self._lock:
            cut = self.cuts.pop(0) if body and self.cuts else None
        self._send(handler, status, headers, data[start:] if body else b"", cut=cut)

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        headers: dict[str, str],
        body: bytes = b"",
        *,
        cut: int | None = None,
    ) -> None:
        handler.send_response(status)
        headers.setdefault("Content-Length", str(len(body)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        try:
            handler.wfile.write(body if cut is None else body[:cut])
            handler.wfile.flush()
        except OSError:  # the client went away: nothing to answer
            pass
        if cut is not None:  # the connection drops mid-file
            handler.close_connection = True
            handler.connection.shutdown(2)
