"""A small Hugging Face Hub-compatible HTTP server on 127.0.0.1, for tests that never go online.

It serves what huggingface_hub's client calls (read from huggingface_hub 2.4's source):

- ``GET /api/models/{repo}[/revision/{rev}]`` (``HfApi.model_info``; ``?blobs=true`` adds sizes,
  git blob ids and LFS hashes), with the Hub's ``X-Error-Code`` headers on errors
  (RepoNotFound, RevisionNotFound, GatedRepo);
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` (``hf_hub_download``): small files answer 200
  with ``ETag`` = git blob id; LFS files answer 302 to a second "CDN" port (another origin, as
  the real Hub redirects to its CDN) with ``X-Linked-Etag`` = SHA-256 and ``X-Linked-Size``;
  every answer carries ``X-Repo-Commit``; a missing file is 404 ``EntryNotFound``;
- uploads as ``HfApi.create_repo`` + ``upload_folder`` make them without Xet
  (``HF_HUB_DISABLE_XET=1``): ``POST /api/repos/create``, ``POST /api/validate-yaml``,
  ``POST /api/models/{repo}/preupload/{rev}``, the LFS batch API
  ``POST /{repo}.git/info/lfs/objects/batch`` with a basic ``PUT`` upload and verify, ``POST
  /api/models/{repo}/commit/{rev}`` (ndjson) and ``POST /api/models/{repo}/branch/{branch}``.

Tokens: ``Authorization: Bearer <token>``; a token not in ``server.tokens`` gets 401 "Invalid
credentials", private repos need a valid one (else 401 RepoNotFound, as the Hub answers), writes
need one. ``server.faults[(repo_id, path)] = "corrupt" | "truncate"`` makes the CDN serve flipped
bytes at the right size, or half the file with a consistent Content-Length; ``"drop"`` makes the
API close the connection when the file is asked for, without answering (the network went down
after the repo listing). Every request is logged in ``server.requests``.

``server.chaos = Chaos(seed, mode, ...)`` makes the server misbehave at random (seeded) for
the fuzz tests (tests/checkpoints/test_hub_faults.py): ``"status"`` answers 429/500/502/503,
``"redirect"`` sends a file's request back to itself (a redirect loop), ``"etag"`` announces a
wrong ``X-Linked-Etag``/``ETag``, ``"hash"`` lists a wrong LFS SHA-256, ``"size"`` announces a
wrong ``X-Linked-Size``, ``"stall"`` sends part of a CDN body and then nothing, ``"cut"`` sends
part of it and closes the connection. ``rate`` is the share of requests hit, ``times`` how many
are hit before it behaves (None: all), ``ranges`` whether a resumed download (``Range``) is
honoured or sent whole from the start again.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import random
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pth", ".pt", ".npz", ".gguf")
GITATTRIBUTES = (
    b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n"
    b"*.bin filter=lfs diff=lfs merge=lfs -text\n"
)


def git_blob_id(content: bytes) -> str:
    """The git object id of a blob: SHA-1 of ``blob <size>\\0`` + content."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(LFS_SUFFIXES)


@dataclass
class Commit:
    oid: str
    files: dict[str, bytes]
    message: str


@dataclass
class Repo:
    repo_id: str
    private: bool = False
    gated: bool = False
    commits: dict[str, Commit] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # branches and tags -> commit oid

    def resolve(self, revision: str) -> Commit | None:
        if revision in self.refs:
            return self.commits[self.refs[revision]]
        matches = [oid for oid in self.commits if len(revision) >= 7 and oid.startswith(revision)]
        return self.commits[matches[0]] if len(matches) == 1 else None


@dataclass
class Request:
    method: str
    path: str
    port: int
    authorization: str | None


@dataclass
class Chaos:
    """Seeded misbehaviour of the server (see the module docstring)."""

    seed: int
    mode: str
    rate: float = 1.0
    times: int | None = None
    ranges: bool = True
    statuses: tuple[int, ...] = (429, 500, 502, 503)
    retry_after: int | None = None
    part: float = 0.5  # the share of the (remaining) body sent before a stall or a cut
    hits: int = 0

    def __post_init__(self):
        self.rng = random.Random(self.seed)
        self.lock = threading.Lock()

    def strike(self, mode: str) -> bool:
        """Return True if this request misbehaves in ``mode``."""
        with self.lock:
            if self.mode != mode or (self.times is not None and self.hits >= self.times):
                return False
            if self.rng.random() >= self.rate:
                return False
            self.hits += 1
            return True

    def status(self) -> int:
        with self.lock:
            return self.rng.choice(self.statuses)


class HubServer:
    """The Hub API on one port, its "CDN" on another; state shared by both."""

    def __init__(self, tokens: dict[str, str] | None = None):
        self.tokens = dict(tokens or {"hf_test_write_token": "tester"})
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.faults: dict[tuple[str, str], str] = {}
        self.chaos: Chaos | None = None
        self.stopping = threading.Event()  # ends stalled answers when the server stops
        # False: the repo listing omits sizes and hashes even when asked (?blobs=true).
        self.listing_hashes = True
        self.requests: list[Request] = []
        self.lock = threading.RLock()
        self._servers: list[ThreadingHTTPServer] = []
        self._threads: list[threading.Thread] = []
        self._counter = 0

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> HubServer:
        for role in ("api", "cdn"):
            handler = type(f"{role.title()}Handler", (_Handler,), {"hub": self, "role": role})
            server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
            server.daemon_threads = True
            thread = threading.Thread(target=server.serve_forever, daemon=True)
            thread.start()
            self._servers.append(server)
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        self.stopping.set()
        for server in self._servers:
            server.shutdown()
            server.server_close()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[0].server_address[1]}"

    @property
    def cdn_endpoint(self) -> str:
        return f"http://127.0.0.1:{self._servers[1].server_address[1]}"

    # --- content -----------------------------------------------------------------------------

    def create_repo(self, repo_id: str, private: bool = False, gated: bool = False) -> Repo:
        with self.lock:
            repo = Repo(repo_id, private=private, gated=gated)
            self.repos[repo_id] = repo
        self.commit(repo_id, {".gitattributes": GITATTRIBUTES}, message="initial commit")
        return repo

    def commit(
        self,
        repo_id: str,
        files: dict[str, bytes],
        branch: str = "main",
        message: str = "update",
        deleted: tuple[str, ...] = (),
    ) -> str:
        """Add a commit on ``branch`` that adds/replaces ``files``; return its oid."""
        with self.lock:
            repo = self.repos[repo_id]
            parent = repo.refs.get(branch)
            tree = dict(repo.commits[parent].files) if parent else {}
            tree.update(files)
            for path in deleted:
                tree.pop(path, None)
            self._counter += 1
            digest = hashlib.sha1(f"{repo_id}:{parent}:{message}:{self._counter}".encode())
            for path in sorted(tree):
                digest.update(path.encode() + hashlib.sha256(tree[path]).digest())
            oid = digest.hexdigest()
            repo.commits[oid] = Commit(oid, tree, message)
            repo.refs[branch] = oid
            for content in (content for path, content in files.items() if is_lfs(path)):
                self.lfs_objects[hashlib.sha256(content).hexdigest()] = content
            return oid

    def add_repo(
        self,
        repo_id: str,
        files: dict[str, bytes],
        private: bool = False,
        gated: bool = False,
    ) -> str:
        """Create a repo holding ``files`` on main; return the commit oid."""
        self.create_repo(repo_id, private=private, gated=gated)
        return self.commit(repo_id, files, message="add files")

    def tag(self, repo_id: str, tag: str, oid: str) -> None:
        with self.lock:
            self.repos[repo_id].refs[tag] = oid

    def count(self, method: str | None = None, contains: str = "", port: str | None = None) -> int:
        """Number of logged requests with that method, path substring and role ("api"/"cdn")."""
        ports = {
            "api": self._servers[0].server_address[1],
            "cdn": self._servers[1].server_address[1],
        }
        with self.lock:
            return sum(
                1
                for request in self.requests
                if (method is None or request.method == method)
                and contains in request.path
                and (port is None or request.port == ports[port])
            )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (an unreachable server)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def silent_endpoint() -> Iterator[str]:
    """An endpoint on 127.0.0.1 that accepts connections and never answers (a hung Hub).

    The socket listens but never calls accept(): the kernel completes the connection, the
    request is sent, and no byte ever comes back.
    """
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}"


# --- request handling ------------------------------------------------------------------------

REPO = r"(?P<repo>[^/]+/[^/]+?)"
API_ROUTES = [
    ("GET", re.compile(rf"^/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?$"), "model_info"),
    ("POST", re.compile(rf"^/api/models/{REPO}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", re.compile(rf"^/api/models/{REPO}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("POST", re.compile(rf"^/api/models/{REPO}/branch/(?P<rev>[^/]+)$"), "branch"),
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate_yaml"),
    ("POST", re.compile(rf"^/{REPO}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/lfs/upload/(?P<oid>[0-9a-f]{64})$"), "lfs_upload"),
    ("POST", re.compile(r"^/lfs/verify$"), "lfs_verify"),
    ("HEAD", re.compile(rf"^/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
    ("GET", re.compile(rf"^/{REPO}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]
CDN_ROUTE = re.compile(r"^/cdn/(?P<repo>[^/]+/[^/]+)/(?P<oid>[0-9a-f]{64})/(?P<path>.+)$")


class _HubErrorResponse(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit=None, **extra):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit
        self.extra = extra


class _Handler(BaseHTTPRequestHandler):
    hub: HubServer
    role: str
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # --- plumbing -----------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self.body = self._read_body()
        with self.hub.lock:
            self.hub.requests.append(
                Request(method, split.path, self.server.server_address[1],
                        self.headers.get("Authorization"))
            )
        try:
            chaos = self.hub.chaos
            if chaos is not None and chaos.strike("status"):
                status = chaos.status()
                extra = {} if chaos.retry_after is None else {"Retry-After": str(chaos.retry_after)}
                raise _HubErrorResponse(status, f"chaos: HTTP {status}", **{"headers": extra})
            if self.role == "cdn":
                match = CDN_ROUTE.match(split.path)
                if method in ("GET", "HEAD") and match:
                    return self._cdn(method, match)
                raise _HubErrorResponse(404, "not found")
            for route_method, pattern, name in API_ROUTES:
                match = pattern.match(split.path)
                if match and route_method == method:
                    params = {k: unquote(v) for k, v in match.groupdict().items() if v is not None}
                    return getattr(self, f"_{name}")(method, **params)
            raise _HubErrorResponse(404, f"no route for {method} {split.path}")
        except _HubErrorResponse as error:
            headers = {"X-Error-Message": error.message}
            if error.code:
                headers["X-Error-Code"] = error.code
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
            headers.update(error.extra.pop("headers", {}))
            body = {"error": error.message, **error.extra}
            self._send(error.status, body, headers, head=method == "HEAD")

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body, headers: dict | None = None, head: bool = False) -> None:
        if isinstance(body, dict | list):
            data = json.dumps(body).encode()
            content_type = "application/json"
        else:
            data = body or b""
            content_type = "application/octet-stream"
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _user(self) -> str | None:
        """The user of a valid token, None without one; 401 for an unknown token."""
        auth = self.headers.get("Authorization")
        if not auth:
            return None
        token = auth.removeprefix("Bearer ").strip()
        if token not in self.hub.tokens:
            raise _HubErrorResponse(401, "Invalid credentials in Authorization header")
        return self.hub.tokens[token]

    def _repo(self, repo_id: str, write: bool = False, files: bool = False) -> Repo:
        user = self._user()
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and user is None):
            # The Hub does not tell a missing repo from a private one.
            raise _HubErrorResponse(401 if user is None else 404, "Repository not found",
                                    "RepoNotFound")
        if files and repo.gated and user is None:
            # A gated repo's listing is public; its files need a token that accepted the terms.
            raise _HubErrorResponse(403, "Access to this repo is restricted", "GatedRepo")
        if write and user is None:
            raise _HubErrorResponse(401, "You must be authenticated to write")
        return repo

    def _commit_of(self, repo: Repo, revision: str) -> Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise _HubErrorResponse(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # --- read API -----------------------------------------------------------------------------

    def _model_info(self, method: str, repo: str, rev: str = "main") -> None:
        hub_repo = self._repo(repo)
        commit = self._commit_of(hub_repo, rev)
        blobs = self.hub.listing_hashes and self.query.get("blobs", ["false"])[0].lower() == "true"
        siblings = []
        for path, content in sorted(commit.files.items()):
            sibling = {"rfilename": path}
            if blobs:
                sibling["size"] = len(content)
                if is_lfs(path):
                    pointer = _lfs_pointer(content)
                    sibling["blobId"] = git_blob_id(pointer)
                    sha256 = hashlib.sha256(content).hexdigest()
                    if self.hub.chaos is not None and self.hub.chaos.strike("hash"):
                        sha256 = hashlib.sha256(sha256.encode()).hexdigest()  # a wrong one
                    sibling["lfs"] = {
                        "sha256": sha256,
                        "size": len(content),
                        "pointerSize": len(pointer),
                    }
                else:
                    sibling["blobId"] = git_blob_id(content)
            siblings.append(sibling)
        self._send(200, {
            "_id": hashlib.md5(repo.encode()).hexdigest()[:24],
            "id": repo,
            "modelId": repo,
            "author": repo.split("/")[0],
            "sha": commit.oid,
            "private": hub_repo.private,
            "gated": "auto" if hub_repo.gated else False,
            "disabled": False,
            "tags": ["mlx"],
            "siblings": siblings,
        })

    def _resolve(self, method: str, repo: str, rev: str, path: str) -> None:
        if self.hub.faults.get((repo, path)) == "drop":
            # The connection goes down before any answer: the client sees a network failure.
            self.close_connection = True
            return None
        chaos = self.hub.chaos
        if chaos is not None and chaos.strike("redirect"):
            # Back to the same address: a client that follows it loops.
            location = f"{self.hub.endpoint}{self.path}"
            return self._send(302, b"", {"Location": location}, head=method == "HEAD")
        hub_repo = self._repo(repo, files=True)
        commit = self._commit_of(hub_repo, rev)
        if path not in commit.files:
            raise _HubErrorResponse(404, "Entry not found", "EntryNotFound", commit=commit.oid)
        content = commit.files[path]
        headers = {"X-Repo-Commit": commit.oid}
        if is_lfs(path):
            oid = hashlib.sha256(content).hexdigest()
            pointer = _lfs_pointer(content)
            headers.update({
                "ETag": f'"{git_blob_id(pointer)}"',
                "X-Linked-Etag": f'"{oid}"',
                "X-Linked-Size": str(len(content)),
                "Location": f"{self.hub.cdn_endpoint}/cdn/{repo}/{oid}/{path}",
            })
            if chaos is not None and chaos.strike("etag"):
                headers["X-Linked-Etag"] = f'"{hashlib.sha256(oid.encode()).hexdigest()}"'
            if chaos is not None and chaos.strike("size"):
                headers["X-Linked-Size"] = str(len(content) + chaos.rng.choice([-1000, 1, 7777]))
            return self._send(302, b"", headers, head=method == "HEAD")
        headers["ETag"] = f'"{git_blob_id(content)}"'
        if chaos is not None and chaos.strike("etag"):
            headers["ETag"] = f'"{git_blob_id(content + b"x")}"'
        return self._send(200, content, headers, head=method == "HEAD")

    def _cdn(self, method: str, match) -> None:
        repo, oid, path = match["repo"], match["oid"], unquote(match["path"])
        content = self.hub.lfs_objects.get(oid)
        if content is None:
            raise _HubErrorResponse(404, "no such object")
        fault = self.hub.faults.get((repo, path))
        if fault == "corrupt":
            # Same size, different bytes at the end (inside the tensor data of a safetensors file).
            content = content[:-64] + bytes(b ^ 0xFF for b in content[-64:])
        elif fault == "truncate":
            content = content[: len(content) // 2]
        chaos = self.hub.chaos
        if method == "GET" and chaos is not None and chaos.mode in ("stall", "cut"):
            return self._cdn_body(content, oid, chaos)
        self._send(200, content, {"ETag": f'"{oid}"'}, head=method == "HEAD")

    def _cdn_body(self, content: bytes, oid: str, chaos: Chaos) -> None:
        """Send the body (from the asked position if ``chaos.ranges``), maybe stalling or cut."""
        start = 0
        asked = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range", ""))
        if asked and chaos.ranges and int(asked[1]) < len(content):
            start = int(asked[1])
        body = content[start:]
        self.send_response(206 if start else 200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("ETag", f'"{oid}"')
        self.send_header("Content-Length", str(len(body)))
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(content) - 1}/{len(content)}")
        self.end_headers()
        if not chaos.strike(chaos.mode):
            self.wfile.write(body)
            return
        with contextlib.suppress(OSError):  # the client may have given up already
            self.wfile.write(body[: max(1, int(len(body) * chaos.part))])
            self.wfile.flush()
        if chaos.mode == "stall":
            self.hub.stopping.wait(60)  # a server that keeps the connection and sends nothing
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    # --- write API ----------------------------------------------------------------------------

    def _create(self, method: str) -> None:
        user = self._user()
        if user is None:
            raise _HubErrorResponse(401, "You must be authenticated to create a repo")
        payload = json.loads(self.body or b"{}")
        repo_id = f"{payload.get('organization') or user}/{payload['name']}"
        if repo_id in self.hub.repos:
            # The Hub's conflict answer still names the repo; create_repo(exist_ok=True) reads it.
            raise _HubErrorResponse(409, "You already created this model repo",
                                    url=f"{self.hub.endpoint}/{repo_id}")
        self.hub.create_repo(repo_id, private=payload.get("visibility") == "private"
                             or bool(payload.get("private")))
        self._send(200, {"url": f"{self.hub.endpoint}/{repo_id}", "name": repo_id})

    def _validate_yaml(self, method: str) -> None:
        content = json.loads(self.body or b"{}").get("content", "")
        errors = []
        if content.startswith("---") and content.count("\n---") < 1:
            errors.append({"message": "metadata block is not closed"})
        status = 400 if errors else 200
        self._send(status, {"errors": errors, "warnings": []})

    def _preupload(self, method: str, repo: str, rev: str) -> None:
        hub_repo = self._repo(repo, write=True)
        current = hub_repo.resolve(rev)
        files = []
        for entry in json.loads(self.body)["files"]:
            path = entry["path"]
            mode = "lfs" if is_lfs(path) else "regular"
            oid = None
            if current is not None and path in current.files:
                existing = current.files[path]
                lfs_oid = hashlib.sha256(existing).hexdigest()
                oid = lfs_oid if mode == "lfs" else git_blob_id(existing)
            files.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": oid})
        self._send(200, {"files": files, "commitOid": current.oid if current else None})

    def _lfs_batch(self, method: str, repo: str) -> None:
        self._repo(repo, write=True)
        payload = json.loads(self.body)
        objects = []
        for item in payload["objects"]:
            oid, size = item["oid"], item["size"]
            if oid in self.hub.lfs_objects:
                objects.append({"oid": oid, "size": size})  # already stored: no actions
                continue
            objects.append({
                "oid": oid,
                "size": size,
                "authenticated": True,
                "actions": {
                    "upload": {"href": f"{self.hub.endpoint}/lfs/upload/{oid}"},
                    "verify": {"href": f"{self.hub.endpoint}/lfs/verify"},
                },
            })
        self._send(200, {"transfer": "basic", "objects": objects, "hash_algo": "sha256"})

    def _lfs_upload(self, method: str, oid: str) -> None:
        if hashlib.sha256(self.body).hexdigest() != oid:
            raise _HubErrorResponse(400, "uploaded content does not match its oid")
        with self.hub.lock:
            self.hub.lfs_objects[oid] = self.body
        self._send(200, b"")

    def _lfs_verify(self, method: str) -> None:
        payload = json.loads(self.body)
        if payload["oid"] not in self.hub.lfs_objects:
            raise _HubErrorResponse(404, "object not uploaded")
        self._send(200, {"success": True})

    def _branch(self, method: str, repo: str, rev: str) -> None:
        hub_repo = self._repo(repo, write=True)
        if rev in hub_repo.refs:
            raise _HubErrorResponse(409, f"Reference {rev} already exists")
        start = json.loads(self.body or b"{}").get("startingPoint") or "main"
        with self.hub.lock:
            hub_repo.refs[rev] = self._commit_of(hub_repo, start).oid
        self._send(200, {})

    def _commit(self, method: str, repo: str, rev: str) -> None:
        hub_repo = self._repo(repo, write=True)
        if rev not in hub_repo.refs:
            raise _HubErrorResponse(404, f"Invalid rev id: {rev}", "RevisionNotFound")
        lines = [json.loads(line) for line in self.body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        files, deleted = {}, []
        for line in lines:
            value = line["value"]
            if line["key"] == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line["key"] == "lfsFile":
                content = self.hub.lfs_objects.get(value["oid"])
                if content is None:
                    raise _HubErrorResponse(422, f"LFS object {value['oid']} was not uploaded")
                files[value["path"]] = content
            elif line["key"] in ("deletedFile", "deletedFolder"):
                deleted.append(value["path"])
        oid = self.hub.commit(repo, files, branch=rev, message=header["summary"],
                              deleted=tuple(deleted))
        self._send(200, {
            "commitUrl": f"{self.hub.endpoint}/{repo}/commit/{oid}",
            "commitOid": oid,
            "pullRequestUrl": None,
        })


def _lfs_pointer(content: bytes) -> bytes:
    oid = hashlib.sha256(content).hexdigest()
    return (
        f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(content)}\n"
    ).encode()

