"""A fake Hugging Face Hub for offline tests: the part of the protocol ``huggingface_hub`` 2.x uses.

It serves, from memory, model repos with branches and commits (each commit a full snapshot of the
repo's files, named by a sha1 like git's):

- ``HEAD|GET /{org}/{name}/resolve/{revision}/{path}``: ``X-Repo-Commit``, ``ETag`` (git blob sha1
  of a regular file), ``Content-Length``; errors as 404 + ``X-Error-Code`` ``RepoNotFound`` /
  ``RevisionNotFound`` / ``EntryNotFound`` (the client turns these into its typed errors).
- ``GET /api/models/{org}/{name}[/revision/{revision}]``: repo info (``sha``, ``siblings``).
- ``GET /api/models/{org}/{name}/tree/{revision}[/{path}]?recursive=``: file/directory listing.
- ``POST /api/repos/create``: new repo with an initial commit (``.gitattributes``); 409 if it exists.
- ``POST /api/models/{org}/{name}/preupload/{revision}``: every file ``uploadMode: "regular"`` (no LFS).
- ``POST /api/models/{org}/{name}/commit/{revision}``: ndjson (header + base64 files + deletions).
- ``POST /api/models/{org}/{name}/branch/{branch}``: new branch (``startingPoint`` optional).
- ``POST /api/validate-yaml``: checks the README's YAML front matter parses to a mapping.

Private repos answer ``RepoNotFound`` to requests without the server's token (like the real Hub);
writes need the token when the server was started with one. Every request is recorded (method,
path, whether an Authorization header came) in ``server.requests`` for assertions; headers
themselves are not kept.

Use the ``hub_server`` fixture (tests/conftest-free: import it in a test module), or
``FakeHub().start()`` / ``.stop()`` directly.
"""

import base64
import hashlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

_REPO_PART = r"[A-Za-z0-9][A-Za-z0-9._-]*"
_SHA_RE = re.compile(r"^[0-9a-f]{40}$")
GITATTRIBUTES = b"*.h5 filter=lfs diff=lfs merge=lfs -text\n*.keras filter=lfs diff=lfs merge=lfs -text\n"


def git_blob_sha1(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class HubError(Exception):
    def __init__(self, status, code, message):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class Repo:
    def __init__(self, repo_id, private):
        self.repo_id = repo_id
        self.private = private
        self.commits = {}  # sha -> {"files": {path: bytes}, "parent": sha|None, "summary": str, "time": float}
        self.branches = {}  # name -> sha

    def commit(self, files, summary, parent=None):
        payload = json.dumps(
            {"parent": parent, "summary": summary, "files": sorted((p, git_blob_sha1(d)) for p, d in files.items()),
             "n": len(self.commits)}
        ).encode()
        sha = hashlib.sha1(payload).hexdigest()
        self.commits[sha] = {"files": dict(files), "parent": parent, "summary": summary, "time": time.time()}
        return sha

    def resolve(self, revision):
        if revision in self.branches:
            return self.branches[revision]
        if _SHA_RE.match(revision) and revision in self.commits:
            return revision
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")


class FakeHub:
    """In-memory hub; thread-safe; ``url`` is ``http://127.0.0.1:<random port>``."""

    def __init__(self, token=None):
        self.token = token
        self.repos = {}
        self.lock = threading.Lock()
        self.requests = []  # (method, path, had_authorization)
        self._server = None
        self._thread = None

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self):
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    @property
    def url(self):
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # -- direct manipulation for tests -----------------------------------------------------------
    def create_repo(self, repo_id, private=False):
        with self.lock:
            if repo_id in self.repos:
                raise HubError(409, None, "You already created this model repo")
            repo = Repo(repo_id, private)
            repo.branches["main"] = repo.commit({".gitattributes": GITATTRIBUTES}, "initial commit")
            self.repos[repo_id] = repo
            return repo

    def put_files(self, repo_id, files, branch="main", summary="test commit", delete=()):
        """Commit ``files`` (path -> bytes) on ``branch``; returns the new commit sha."""
        with self.lock:
            repo = self.repos[repo_id]
            parent = repo.branches[branch]
            snapshot = dict(repo.commits[parent]["files"])
            for path in delete:
                snapshot.pop(path, None)
            snapshot.update(files)
            sha = repo.commit(snapshot, summary, parent)
            repo.branches[branch] = sha
            return sha

    def files(self, repo_id, revision="main"):
        with self.lock:
            repo = self.repos[repo_id]
            return dict(repo.commits[repo.resolve(revision)]["files"])


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub = None
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # quiet
        pass

    # -- plumbing --------------------------------------------------------------------------------
    def _send(self, status, body=b"", headers=None, head=False):
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            headers = {"Content-Type": "application/json", **(headers or {})}
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head and body:
            self.wfile.write(body)

    def _error(self, err, head=False):
        headers = {"X-Error-Message": err.message}
        if err.code:
            headers["X-Error-Code"] = err.code
        if isinstance(err, _EntryNotFound):  # the client caches the miss under this commit
            headers["X-Repo-Commit"] = err.sha
        self._send(err.status, {"error": err.message}, headers, head=head)

    def _read_body(self):
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self):
        auth = self.headers.get("Authorization") or ""
        return self.hub.token is not None and auth == f"Bearer {self.hub.token}"

    def _repo(self, repo_id, write=False):
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.private and not self._authorized()):
            raise HubError(404, "RepoNotFound", "Repository not found")
        if write and self.hub.token is not None and not self._authorized():
            raise HubError(401, None, "Invalid credentials in Authorization header")
        return repo

    def _dispatch(self, method):
        parts = urlsplit(self.path)
        path = parts.path
        query = parse_qs(parts.query)
        self.hub.requests.append((method, unquote(path), bool(self.headers.get("Authorization"))))
        head = method == "HEAD"
        try:
            with self.hub.lock:
                status, body, headers = self._route(method, path, query)
        except HubError as err:
            self._error(err, head=head)
            return
        self._send(status, body, headers, head=head)

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_GET(self):
        self._dispatch("GET")

    def do_POST(self):
        self._body = self._read_body()
        self._dispatch("POST")

    # -- routes ----------------------------------------------------------------------------------
    def _route(self, method, path, query):
        m = re.fullmatch(rf"/({_REPO_PART}/{_REPO_PART})/resolve/([^/]+)/(.+)", path)
        if m and method in ("HEAD", "GET"):
            return self._resolve(m.group(1), unquote(m.group(2)), unquote(m.group(3)))
        if method == "GET":
            m = re.fullmatch(rf"/api/models/({_REPO_PART}/{_REPO_PART})(?:/revision/([^/]+))?", path)
            if m:
                return self._info(m.group(1), unquote(m.group(2) or "main"))
            m = re.fullmatch(rf"/api/models/({_REPO_PART}/{_REPO_PART})/tree/([^/]+)(?:/(.+))?", path)
            if m:
                recursive = query.get("recursive", ["False"])[0].lower() == "true"
                return self._tree(m.group(1), unquote(m.group(2)), unquote(m.group(3) or ""), recursive)
        if method == "POST":
            if path == "/api/repos/create":
                return self._create()
            if path == "/api/validate-yaml":
                return self._validate_yaml()
            m = re.fullmatch(rf"/api/models/({_REPO_PART}/{_REPO_PART})/(preupload|commit|branch)/([^/]+)", path)
            if m:
                repo_id, action, rev = m.group(1), m.group(2), unquote(m.group(3))
                return getattr(self, f"_{action}")(repo_id, rev)
        raise HubError(404, None, f"no route for {method} {path}")

    def _resolve(self, repo_id, revision, filename):
        repo = self._repo(repo_id)
        sha = repo.resolve(revision)
        files = repo.commits[sha]["files"]
        if filename not in files:
            raise _EntryNotFound(sha)
        data = files[filename]
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_blob_sha1(data)}"', "Content-Type": "application/octet-stream"}
        return 200, data, headers

    def _info(self, repo_id, revision):
        repo = self._repo(repo_id)
        sha = repo.resolve(revision)
        files = repo.commits[sha]["files"]
        return 200, {
            "id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private,
            "siblings": [{"rfilename": p} for p in sorted(files)],
            "lastModified": time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(repo.commits[sha]["time"])),
        }, {}

    def _tree(self, repo_id, revision, prefix, recursive):
        repo = self._repo(repo_id)
        sha = repo.resolve(revision)
        files = repo.commits[sha]["files"]
        prefix = prefix.strip("/")
        base = f"{prefix}/" if prefix else ""
        if prefix and not any(p.startswith(base) for p in files):
            raise _EntryNotFound(sha)
        entries, dirs = [], set()
        for p in sorted(files):
            if not p.startswith(base):
                continue
            rest = p[len(base):]
            if "/" in rest and not recursive:
                dirs.add(base + rest.split("/")[0])
                continue
            if recursive:
                parts = rest.split("/")[:-1]
                for i in range(1, len(parts) + 1):
                    dirs.add(base + "/".join(parts[:i]))
            entries.append({"type": "file", "path": p, "size": len(files[p]), "oid": git_blob_sha1(files[p])})
        entries += [{"type": "directory", "path": d, "oid": hashlib.sha1(d.encode()).hexdigest(), "size": 0}
                    for d in sorted(dirs)]
        return 200, entries, {}

    def _create(self):
        payload = json.loads(self._body or b"{}")
        if self.hub.token is not None and not self._authorized():
            raise HubError(401, None, "Invalid credentials in Authorization header")
        if payload.get("type", "model") != "model":
            raise HubError(400, None, "only model repos are supported by the fake hub")
        name, org = payload.get("name"), payload.get("organization")
        if not org or not re.fullmatch(_REPO_PART, name or "") or not re.fullmatch(_REPO_PART, org):
            raise HubError(400, None, "invalid repo name")
        repo_id = f"{org}/{name}"
        if repo_id in self.hub.repos:  # the body still carries the url (create_repo(exist_ok=True) reads it)
            return 409, {"error": "You already created this model repo", "url": f"{self.hub.url}/{repo_id}"}, {}
        private = payload.get("visibility") == "private" or bool(payload.get("private"))
        repo = Repo(repo_id, private)
        repo.branches["main"] = repo.commit({".gitattributes": GITATTRIBUTES}, "initial commit")
        self.hub.repos[repo_id] = repo
        return 200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id}, {}

    def _branch(self, repo_id, branch):
        repo = self._repo(repo_id, write=True)
        if branch in repo.branches:
            raise HubError(409, None, "Reference already exists")
        payload = json.loads(self._body or b"{}")
        repo.branches[branch] = repo.resolve(payload.get("startingPoint") or "main")
        return 200, {}, {}

    def _preupload(self, repo_id, revision):
        repo = self._repo(repo_id, write=True)
        repo.resolve(revision)
        payload = json.loads(self._body)
        return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False}
                               for f in payload["files"]]}, {}

    def _commit(self, repo_id, revision):
        repo = self._repo(repo_id, write=True)
        if revision not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        parent = repo.branches[revision]
        snapshot = dict(repo.commits[parent]["files"])
        summary = ""
        for line in self._body.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                summary = value.get("summary", "")
                if value.get("parentCommit") and value["parentCommit"] != parent:
                    raise HubError(412, None, "parent commit is not the head of the branch")
            elif key == "file":
                if value.get("encoding") != "base64":
                    raise HubError(400, None, "only base64 file contents are supported")
                path = value["path"]
                if path.startswith("/") or ".." in path.split("/"):
                    raise HubError(400, None, f"invalid path {path!r}")
                snapshot[path] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                if value["path"] not in snapshot:
                    raise HubError(404, "EntryNotFound", "A file with this name doesn't exist")
                del snapshot[value["path"]]
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                snapshot = {p: d for p, d in snapshot.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, None, f"unsupported commit operation {key!r} (the fake hub has no LFS)")
        sha = repo.commit(snapshot, summary, parent)
        repo.branches[revision] = sha
        return 200, {"success": True, "commitOid": sha, "commitUrl": f"{self.hub.url}/{repo_id}/commit/{sha}",
                     "commitMessage": summary}, {}

    def _validate_yaml(self):
        import yaml

        content = json.loads(self._body).get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*\n", content, flags=re.S)
        if not m:
            return 200, {"errors": [], "warnings": [{"message": "empty or missing yaml metadata in repo card"}]}, {}
        try:
            data = yaml.safe_load(m.group(1))
        except yaml.YAMLError as e:
            return 400, {"errors": [{"message": f"invalid YAML: {e}"}]}, {}
        if not isinstance(data, dict):
            return 400, {"errors": [{"message": "YAML metadata must be a mapping"}]}, {}
        return 200, {"errors": [], "warnings": []}, {}


class _EntryNotFound(HubError):
    def __init__(self, sha):
        super().__init__(404, "EntryNotFound", "Entry not found")
        self.sha = sha


@pytest.fixture
def hub_server(monkeypatch, tmp_path):
    """A running fake hub; ``HF_ENDPOINT`` points at it and ``HF_HOME`` is a fresh tmp folder.

    ``huggingface_hub`` reads these variables at import time: code under test must pass the
    endpoint/cache explicitly (keras_ssl3d.zoo reads them at call time) or run in a subprocess.
    """
    hub = FakeHub(token="hf_fake_write_token_123456").start()
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    monkeypatch.setenv("KERAS_SSL3D_HOME", str(tmp_path / "ssl3d_home"))
    try:
        yield hub
    finally:
        hub.stop()
