"""hf:// model names: GGUF files on the Hugging Face Hub, fetched into its shared cache.

Everything goes through `huggingface_hub`, the library every Hugging Face tool
uses, so its cache (HF_HOME, HF_HUB_CACHE), mirror (HF_ENDPOINT), token
(HF_TOKEN) and offline mode (HF_HUB_OFFLINE=1) work here as they do there, and
a file one tool pulled is found by the others. The library is the optional
`hub` extra, imported only when an hf:// name is used. `load()` turns a name
into a local path before a backend is chosen, so every backend gets a plain file.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import unicodedata
from urllib.parse import quote, unquote

import attrs

from ._locations import redacted
from ._splits import split_parts
from .errors import (
    HubAccessDenied,
    HubDownloadFailed,
    HubFileNotFound,
    HubNotInstalled,
    HubRepoNotFound,
    HubUnreachable,
    InvalidModelFile,
    ModelLoadError,
)

__all__ = [
    "SCHEME",
    "CachedSnapshot",
    "HubFile",
    "cached_snapshots",
    "fetch",
    "fetched",
    "is_hub_name",
    "parse",
    "projector",
    "resolve",
]

logger = logging.getLogger(__name__)

SCHEME = "hf://"
_FORM = "hf://OWNER/REPO[@REVISION]/FILE.gguf"
# The hub's own rule for a user, organisation or repository name: letters, digits, "-", "_"
# and ".", neither first nor last a "-" or ".", no "--" or "..", at most 96 characters.
_ID = re.compile(r"^(?!.*(?:--|\.\.))\w(?:[\w.-]{0,94}\w)?$", re.ASCII)
_NAME = re.compile(
    r"^hf://(?P<owner>[^/@]*)/(?P<repo>[^/@]*)(?:@(?P<revision>[^/]*))?/(?P<file>.*)$"
)
_INSTALL = "python3 -m pip install 'inference-core[hub]'"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")  # an LFS file's etag: its blob's name in the cache
_HASH_CHUNK = 1 << 20


@attrs.frozen
class HubFile:
    """A file of a model repository at a revision (None: the default branch)."""

    repo_id: str
    filename: str
    revision: str | None = None

    @property
    def name(self) -> str:
        return _prefix(self.repo_id, self.revision) + self.filename


def _prefix(repo_id: str, revision: str | None) -> str:
    """`hf://OWNER/REPO[@REVISION]/`; a revision with a "/" (`refs/pr/1`) is percent-encoded."""
    at = "" if revision is None else "@" + quote(revision, safe="")
    return f"{SCHEME}{repo_id}{at}/"


def is_hub_name(location: str) -> bool:
    """Whether `location` is an hf:// name rather than a path or another URL."""
    return location[: len(SCHEME)].lower() == SCHEME


def parse(name: str) -> HubFile:
    """`hf://OWNER/REPO[@REVISION]/FILE.gguf` as a `HubFile`; `InvalidModelFile` says what
    is wrong with anything else."""
    match = _NAME.match(SCHEME + name[len(SCHEME) :]) if is_hub_name(name) else None
    if match is None:
        raise InvalidModelFile(name, f"is not a Hugging Face file name: {_FORM}")
    owner, repo, file = match["owner"], match["repo"], match["file"]
    for part, value in (("owner", owner), ("repository", repo)):
        if not _ID.match(value):
            raise InvalidModelFile(
                name,
                f"{value!r} is not a valid {part} name (letters, digits, '-', '_', '.'): {_FORM}",
            )
    segments = file.split("/")
    if any(segment in ("", ".", "..") for segment in segments) or "\\" in file:
        raise InvalidModelFile(name, f"{file!r} is not a file path within a repository: {_FORM}")
    if not file.lower().endswith(".gguf"):
        raise InvalidModelFile(name, f"names {file!r}, not a GGUF file: {_FORM}")
    revision = None if match["revision"] is None else unquote(match["revision"])
    if revision is not None:
        _check_revision(name, revision)
    return HubFile(f"{owner}/{repo}", file, revision)


def _check_revision(name: str, revision: str) -> None:
    """Refuse a revision that is no branch, tag or commit name and would not stay a file
    name: huggingface_hub stores `refs/<revision>` in the cache, and "..", a leading "/"
    or a backslash there write outside it (git refuses such names and control
    characters too, so no real revision is lost)."""
    if not revision.strip():
        raise InvalidModelFile(name, f"has an empty revision after '@': {_FORM}")
    unsafe = (
        ".." in revision
        or revision.startswith("/")
        or "\\" in revision
        or any(unicodedata.category(char) == "Cc" for char in revision)
    )
    if unsafe:
        raise InvalidModelFile(
            name,
            f"revision {revision!r} is not a branch, tag or commit name (no '..', leading '/', "
            f"backslash or control character): {_FORM}",
        )


def _require(name: str) -> None:
    """Fail with the extra to install when huggingface_hub is absent."""
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise HubNotInstalled(
            name, f"{name} needs huggingface_hub, the hub extra: {_INSTALL}"
        ) from None


def fetch(name: str, *, local_only: bool = False) -> str:
    """The local path of an hf:// model, downloaded into the cache unless it is there.

    A split model (`...-00001-of-00003.gguf`) has every part fetched, all from the
    revision the first part came from, and its first part's path is returned. With
    `local_only`, only the cache is looked at: a file not there is `InvalidModelFile`.
    """
    wanted = parse(name)
    _require(name)
    parts = split_parts(wanted.filename)
    logger.debug("fetching %s (%d part(s)) through huggingface_hub", name, len(parts))
    first = _fetch_one(attrs.evolve(wanted, filename=parts[0]), name, local_only)
    # snapshots/<commit>/<filename>: the other parts come from that very commit, even if
    # the branch moves on meanwhile, so that llama-server finds a matching set beside it.
    commit = os.path.basename(first[: -len(parts[0]) - 1])
    for part in parts[1:]:
        _fetch_one(HubFile(wanted.repo_id, part, commit), name, local_only)
    logger.debug("%s is %s", name, first)
    return first


def _fetch_one(file: HubFile, name: str, local_only: bool) -> str:
    from huggingface_hub import hf_hub_download

    blobs = _blobs_folder(file.repo_id)
    cached = _entries(blobs)
    try:
        path = hf_hub_download(
            file.repo_id, file.filename, revision=file.revision, local_files_only=local_only
        )
    except _request_errors() as error:
        raise _failure(file, name, error, local_only) from error
    _verify_download(path, blobs, cached, file, name)
    return path


def _blobs_folder(repo_id: str) -> str:
    """Where the cache keeps a model repository's files, each named by its etag."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import repo_folder_name

    folder = repo_folder_name(repo_id=repo_id, repo_type="model")
    return os.path.join(constants.HF_HUB_CACHE, folder, "blobs")


def _entries(folder: str) -> frozenset[str]:
    try:
        return frozenset(os.listdir(folder))
    except OSError:  # no such folder yet: nothing of this repository is cached
        return frozenset()


def _verify_download(
    path: str, blobs: str, cached: frozenset[str], file: HubFile, name: str
) -> None:
    """Check a file this call downloaded against the sha256 the hub announced for it.

    The cache stores an LFS file (every GGUF file is one) as `blobs/<sha256>`, named by
    the digest the hub announced, and `path` links to it. Only a blob that was not in
    `blobs` before the call (`cached`) is hashed: it is what this call downloaded, while
    hashing a cached multi-GB file on every load would cost seconds to minutes each
    time. A blob already there is trusted as whoever downloaded it left it, and a cache
    without links (where symlinks are not supported) keeps no blob to check. On a
    mismatch the blob and the link to it are removed, so no tool sharing the cache
    finds altered bytes under that digest.
    """
    blob = os.path.realpath(path)
    announced = os.path.basename(blob)
    fresh = os.path.dirname(blob) == os.path.realpath(blobs) and announced not in cached
    if not fresh or not _SHA256.match(announced):  # a cached or a non-LFS file
        return
    logger.debug("checking %s against the sha256 the hub announced, %s", file.filename, announced)
    digest = hashlib.sha256()
    with open(blob, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    if digest.hexdigest() == announced:
        return
    for leftover in (path, blob):
        with contextlib.suppress(FileNotFoundError):
            os.remove(leftover)
    from huggingface_hub import constants

    endpoint = redacted(constants.ENDPOINT)
    raise HubDownloadFailed(
        name,
        f"{name}: the {file.filename} downloaded from {endpoint} is not the file the hub "
        f"announced: its sha256 is {digest.hexdigest()}, not {announced}; it was removed "
        f"from the cache. Try again; if it fails the same way, {endpoint} serves a "
        "damaged or altered file: report it to whoever runs it, or use another mirror",
    )


def _request_errors() -> tuple[type[Exception], ...]:
    """What huggingface_hub raises for a failed request: its own errors are `OSError`s; its
    HTTP client's (a connection cut mid-file, refused, timed out) come through as they are."""
    # The alias the library keeps for its users across its HTTP clients (httpx, httpx2).
    from huggingface_hub.utils import httpx  # type: ignore[attr-defined]

    return (OSError, httpx.TransportError)


def _failure(file: HubFile, name: str, error: Exception, local_only: bool) -> ModelLoadError:
    """The typed error, in our words, for what `hf_hub_download` raised."""
    from huggingface_hub import constants, get_token, try_to_load_from_cache
    from huggingface_hub import errors as hub

    endpoint, repo, cache = redacted(constants.ENDPOINT), file.repo_id, constants.HF_HUB_CACHE
    token_set = get_token() is not None
    at = f" at revision {file.revision!r}" if file.revision else ""
    if isinstance(error, hub.GatedRepoError):
        advice = (
            "the token set (HF_TOKEN or `hf auth login`) has no access to it"
            if token_set
            else "no token is set: set HF_TOKEN (or run `hf auth login`)"
        )
        return HubAccessDenied(
            name,
            f"{name}: {repo} is a gated repository and {advice}; accept its terms at "
            f"{endpoint}/{repo} with the account the token belongs to",
        )
    if isinstance(error, hub.RepositoryNotFoundError):
        hint = (
            "the token set cannot read it, if it is private"
            if token_set
            else "if it is private, set HF_TOKEN to a token that can read it"
        )
        return HubRepoNotFound(name, f"{name}: no repository {repo} on {endpoint} ({hint})")
    if isinstance(error, hub.RevisionNotFoundError):
        return HubRepoNotFound(name, f"{name}: {repo} has no revision {file.revision!r}")
    if isinstance(error, hub.RemoteEntryNotFoundError):
        files = _gguf_files(file)
        listing = "" if files is None else f"; its GGUF files: {', '.join(files) or 'none'}"
        return HubFileNotFound(
            name, f"{name}: {repo} has no file {file.filename}{at}{listing}", files or ()
        )
    if isinstance(error, hub.LocalEntryNotFoundError):
        if local_only:
            return InvalidModelFile(
                name,
                f"is not in the Hugging Face cache ({cache}): `inference pull {name}` downloads it",
            )
        cached = isinstance(
            try_to_load_from_cache(repo, file.filename, revision=file.revision), str
        )
        where = f"{file.filename} is {'' if cached else 'not '}in the cache ({cache})"
        if constants.is_offline_mode():
            return HubUnreachable(
                name,
                f"{name}: HF_HUB_OFFLINE=1 keeps us off the network and {where}: unset it to "
                "download the file",
                cached=cached,
            )
        return HubUnreachable(
            name,
            f"{name}: cannot reach the hub at {endpoint} ({_first_line(error.__cause__ or error)})"
            f" and {where}; once a file is cached, HF_HUB_OFFLINE=1 loads it without a network",
            cached=cached,
        )
    if isinstance(error, hub.HfHubHTTPError) and error.response.status_code in (401, 403):
        return HubAccessDenied(
            name, f"{name}: the hub refused access to {repo} ({_first_line(error)}); check HF_TOKEN"
        )
    if isinstance(error, hub.HfHubHTTPError):
        return HubDownloadFailed(
            name,
            f"{name}: the hub at {endpoint} answered {error.response.status_code} for "
            f"{file.filename} ({_first_line(error)}); try again later",
        )
    if isinstance(error, OSError) and error.errno is not None:  # the disk: full, read-only
        return HubDownloadFailed(
            name,
            f"{name}: {file.filename} could not be written into the cache {cache} "
            f"({error.strerror or error}); nothing partial was kept",
        )
    return HubDownloadFailed(
        name,
        f"{name}: downloading {file.filename} failed part way and could not resume "
        f"({_first_line(error)}); nothing partial was kept, so running it again starts over",
    )


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _listing(file: HubFile) -> list[str] | None:
    """The repository's files at the file's revision, or None when the hub cannot say."""
    from huggingface_hub import HfApi

    try:
        return list(HfApi().list_repo_files(file.repo_id, revision=file.revision))
    except _request_errors() as error:
        logger.debug("could not list the files of %s: %r", file.repo_id, error)
        return None


def _gguf_files(file: HubFile) -> tuple[str, ...] | None:
    """The GGUF models the repository has (first parts of split ones), or None when the hub
    cannot say: the listing is a courtesy, and its failure must not hide the real error."""
    names = _listing(file)
    if names is None:
        return None
    return tuple(sorted(n for n in names if n.lower().endswith(".gguf") and split_parts(n)[0] == n))


def _is_projector(filename: str) -> bool:
    base = filename.rsplit("/", 1)[-1].lower()
    return base.startswith("mmproj") and base.endswith(".gguf")


def projector(name: str, model_path: str, *, local_only: bool = False) -> str | None:
    """The local path of the projector beside an hf:// model fetched to `model_path`: the
    one `mmproj*.gguf` its repository holds at the model's commit, fetched from there;
    None when it holds none, or several (the user then names one as `mmproj`).
    Offline, or with `local_only`, the cached snapshot is looked in instead."""
    wanted = parse(name)
    if _is_projector(wanted.filename):
        return None  # the projector itself, loaded as a model: nothing beside it
    snapshot = model_path[: -len(wanted.filename) - 1]  # snapshots/<commit>
    at_commit = HubFile(wanted.repo_id, wanted.filename, os.path.basename(snapshot))
    names = None if local_only else _listing(at_commit)
    if names is None:
        names = [
            os.path.relpath(os.path.join(folder, entry), snapshot)
            for folder, _, entries in os.walk(snapshot)
            for entry in entries
        ]
    found = sorted(n for n in names if _is_projector(n))
    if len(found) != 1:
        if found:
            logger.info(
                "%s holds %d projectors (%s): pass one as mmproj",
                name,
                len(found),
                ", ".join(found),
            )
        return None
    logger.info("fetching %s's projector %s", name, found[0])
    return _fetch_one(attrs.evolve(at_commit, filename=found[0]), name, local_only)


@attrs.frozen
class CachedSnapshot:
    """One revision of a model repository in the cache: `folder` holds its files, and
    `prefix` plus a file's path within it is that file's hf:// name."""

    prefix: str
    folder: str


def cached_snapshots() -> list[CachedSnapshot]:
    """Every model repository revision in the Hugging Face cache, by name.

    A revision the default branch points at is named without "@"; another by its
    branch or tag, or by its commit when nothing points at it.
    """
    _require("listing the Hugging Face cache")
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        cache = scan_cache_dir()
    except CacheNotFound:
        return []
    found = []
    for repo in sorted(cache.repos, key=lambda repo: repo.repo_id):
        if repo.repo_type != "model":
            continue
        for revision in sorted(repo.revisions, key=lambda revision: revision.commit_hash):
            refs = sorted(revision.refs)
            label = "main" if "main" in refs else (refs or [revision.commit_hash])[0]
            prefix = _prefix(repo.repo_id, None if label == "main" else label)
            found.append(CachedSnapshot(prefix, str(revision.snapshot_path)))
    return found


def fetched(name: str | None) -> str | None:
    """A file's path: an hf:// name fetched into the cache first; a path (or None) as given."""
    return fetch(name) if name and is_hub_name(name) else name


def resolve(location: str, mmproj: str | None) -> tuple[str, str | None]:
    """A model's file and projector, hf:// names fetched into the cache (the projector
    beside a fetched model too, unless `mmproj` names another or is ""); paths as given."""
    mmproj = fetched(mmproj)
    if is_hub_name(location):
        name, location = location, fetch(location)
        if mmproj is None:
            mmproj = projector(name, location)
    return location, mmproj
