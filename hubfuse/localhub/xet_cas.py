"""The Xet side of the local hub: token routes, the CAS API under `/xet-cas`, the `/resolve` headers.

What the real `hf_xet` client (1.8.0) calls, from the Xet protocol specification (CAS API, xorb and
shard formats, hashing, reconstruction, authentication):

- `GET /api/{type}s/{id}/xet-{read,write}-token/{rev}`: a short-lived CAS token scoped to that repo
  (HMAC-signed: repo, scope, expiry), as JSON `{accessToken, exp, casUrl}` and as `X-Xet-*` headers.
  Read takes what a download takes; write takes a write token of the repo's namespace.
- CAS routes (`casUrl` = `<endpoint>/xet-cas`), each checking the CAS token (401 missing or bad,
  403 wrong scope or another repo's file):
  `POST /v1/xorbs/default/{hash}`: every chunk decompressed and hashed, the xorb hash recomputed;
  `POST /v1/shards`: each file's segments name stored xorbs, their verification hashes and the file
  hash recompute, the rebuilt bytes match the sha256 and the spec's chunking; the file then becomes
  an LFS object of the token's repo (what the commit's `lfsFile` names);
  `GET /v1/reconstructions/{file_hash}` (+ Range): terms and fetch URLs signed like presigned ones;
  `GET /v1/fetch/{xorb}` (+ Range): the xorb's bytes.
  Not served (404, the client falls back or skips): v2 routes, xorb grants, the global dedup query.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import re
import time
from dataclasses import dataclass
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from hubfuse.localhub import xet_formats, xethash
from hubfuse.localhub.apierror import ApiError, bad_request, forbidden, unauthorized
from hubfuse.localhub.context import Ctx, Hub
from hubfuse.localhub.payload import read_body
from hubfuse.localhub.records import RepoId, RepoNotFound
from hubfuse.localhub.xet_store import FileRecord, IndexedChunk, Term, XetStore

CAS_PREFIX = "/xet-cas"
CAS_TOKEN_TTL_SECONDS = 900
FETCH_URL_TTL_SECONDS = 3600
# A xorb is at most 64 MiB of chunks (compression never makes one longer) plus headers and a footer.
XORB_MAX_BODY = xethash.MAX_XORB_BYTES + 2 * 1024 * 1024
SHARD_MAX_BODY = 64 * 1024 * 1024
TELEMETRY_MAX_BODY = 1024 * 1024

_HASH = r"(?P<hash>[0-9a-f]{64})"
_RANGE_RE = re.compile(r"^bytes=(\d*)-(\d*)$")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class CasGrant:
    repo: RepoId
    scope: str  # "read" or "write"


class CasSigner:
    """CAS tokens and fetch URLs, HMAC-signed with the hub's key (each with its own purpose tag)."""

    def __init__(self, key: bytes) -> None:
        self.key = key

    def _mac(self, purpose: str, body: str) -> str:
        return _b64(hmac.new(self.key, f"{purpose}:{body}".encode(), hashlib.sha256).digest())

    def token(self, repo: RepoId, scope: str, expires: int) -> str:
        body = _b64(json.dumps({"t": repo.type, "r": repo.id, "s": scope, "e": expires}).encode())
        return f"xet_{body}.{self._mac('cas-token', body)}"

    def check_token(self, token: str) -> CasGrant:
        body, _, mac = token.removeprefix("xet_").partition(".")
        if (
            not token.startswith("xet_")
            or not mac
            or not hmac.compare_digest(mac, self._mac("cas-token", body))
        ):
            raise unauthorized("Invalid Xet CAS token")
        claims = json.loads(_unb64(body))
        if claims["e"] < time.time():
            raise unauthorized("Xet CAS token expired")
        return CasGrant(RepoId.parse(claims["t"], claims["r"]), claims["s"])

    def fetch_query(self, xorb: str, expires: int) -> str:
        return f"exp={expires}&sig={self._mac('xorb-fetch', f'{xorb}:{expires}')}"

    def check_fetch(self, xorb: str, expires: str, signature: str) -> None:
        expected = self._mac("xorb-fetch", f"{xorb}:{expires}")
        if not expires.isdigit() or not hmac.compare_digest(signature, expected):
            raise forbidden("Invalid xorb fetch signature")
        if int(expires) < time.time():
            raise forbidden("Xorb fetch URL expired")


def _signer(hub: Hub) -> CasSigner:
    return CasSigner(hub.signer.key)


def cas_base(hub: Hub) -> str:
    """The CAS's path, unique to this data dir: hf_xet keys its local shard cache on the CAS URL and
    deduplicates against the xorbs it lists, which a hub started afresh on the same port never got."""
    cas_id = hmac.new(hub.signer.key, b"xet-cas-id", hashlib.sha256).hexdigest()[:16]
    return f"{CAS_PREFIX}/{cas_id}"


# ---- token routes (in the Hub's route table) --------------------------------------------------------


def _token_response(ctx: Ctx, scope: str) -> Response:
    repo = ctx.repo()
    expires = int(time.time()) + CAS_TOKEN_TTL_SECONDS
    token = _signer(ctx.hub).token(repo, scope, expires)
    cas_url = ctx.endpoint + cas_base(ctx.hub)
    headers = {"X-Xet-Cas-Url": cas_url, "X-Xet-Access-Token": token, "X-Xet-Token-Expiration": str(expires)}
    return JSONResponse({"accessToken": token, "exp": expires, "casUrl": cas_url}, headers=headers)


def read_token(ctx: Ctx) -> Response:
    return _token_response(ctx, "read")


def write_token(ctx: Ctx) -> Response:
    # As on the Hub, any write token may open a pull request (`?create_pr=1`); pushing to a branch
    # takes a member's.
    if not ctx.flag("create_pr"):
        ctx.writable(ctx.repo())
    return _token_response(ctx, "write")


def resolve_headers(ctx: Ctx, repo: RepoId, commit: str, lfs: dict[str, Any] | None) -> dict[str, str]:
    """`X-Xet-Hash` and the `xet-auth` link on a `/resolve` of an LFS file, as the Hub sends them."""
    xet_hash = ctx.store.xet_hash(lfs["sha256"]) if lfs else None
    if not xet_hash:
        return {}
    refresh = f"{ctx.endpoint}/api/{repo.type}s/{repo.id}/xet-read-token/{commit}"
    return {"X-Xet-Hash": xet_hash, "Link": f'<{refresh}>; rel="xet-auth"'}


# ---- the CAS API ----------------------------------------------------------------------------------


@dataclass
class CasRequest:
    hub: Hub
    request: Request
    endpoint: str
    grant: CasGrant | None
    body: bytes = b""

    @property
    def xet(self) -> XetStore:
        return XetStore(self.hub.store)

    def need(self, scope: str) -> RepoId:
        if self.grant is None:
            raise unauthorized("A Xet CAS token is required (Authorization: Bearer <token>)")
        if scope == "write" and self.grant.scope != "write":
            raise forbidden("This Xet CAS token is read-only")
        if not self.hub.store.exists(self.grant.repo):
            raise forbidden("This Xet CAS token's repository no longer exists")
        return self.grant.repo


def _grant(hub: Hub, request: Request) -> CasGrant | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        return None
    if scheme.lower() != "bearer" or not value.strip():
        raise unauthorized("Invalid Authorization header for the Xet CAS")
    try:
        return _signer(hub).check_token(value.strip())
    except (ValueError, KeyError, TypeError):
        raise unauthorized("Invalid Xet CAS token") from None


async def dispatch(hub: Hub, request: Request, raw_path: str, endpoint: str) -> Response:
    """Serve one CAS request (the app hands over every path under CAS_PREFIX)."""
    base, method = cas_base(hub), request.method
    if not raw_path.startswith(base + "/"):
        raise ApiError(404, "No such Xet CAS on this hub (its data dir was replaced): ask for a new token")
    path = raw_path[len(base) :]
    if match := re.fullmatch(rf"/v1/fetch/{_HASH}", path):
        if method not in ("GET", "HEAD"):
            raise ApiError(405, "Method not allowed")
        return await run_in_threadpool(_fetch_xorb, hub, request, match["hash"])
    cas = CasRequest(hub, request, endpoint, _grant(hub, request))
    if match := re.fullmatch(rf"/v1/xorbs/default/{_HASH}", path):
        if method == "HEAD":
            cas.need("read")
            return Response(b"", status_code=200 if cas.xet.has_xorb(match["hash"]) else 404)
        if method != "POST":
            raise ApiError(405, "Method not allowed")
        cas.need("write")
        cas.body = await read_body(request, XORB_MAX_BODY)
        return await run_in_threadpool(_upload_xorb, cas, match["hash"])
    if path == "/v1/shards" and method == "POST":
        cas.need("write")
        cas.body = await read_body(request, SHARD_MAX_BODY)
        return await run_in_threadpool(_upload_shard, cas)
    if (match := re.fullmatch(rf"/v1/reconstructions/{_HASH}", path)) and method == "GET":
        repo = cas.need("read")
        return await run_in_threadpool(_reconstruction, cas, repo, match["hash"])
    if path == "/v1/telemetry" and method == "POST":
        cas.need("read")
        await read_body(request, TELEMETRY_MAX_BODY)
        return Response(b"", status_code=200)  # accepted, not kept: the local hub collects nothing
    cas.need("read")
    raise ApiError(404, f"Not served by this Xet CAS: {method} {path}")


def _upload_xorb(cas: CasRequest, named: str) -> Response:
    try:
        parsed = xet_formats.parse_xorb(cas.body)
    except xet_formats.XetFormatError as exc:
        raise bad_request(f"Invalid xorb: {exc}") from None
    computed = xethash.hash_hex(parsed.hash)
    if computed != named:
        raise bad_request(f"Xorb hash mismatch: the chunks hash to {computed}, not {named}")
    return JSONResponse({"was_inserted": cas.xet.put_xorb(parsed, cas.body)})


# ---- shards -----------------------------------------------------------------------------------------


def _check_shard_xorb(xet: XetStore, xorb: xet_formats.ShardXorb) -> None:
    name = xethash.hash_hex(xorb.xorb_hash)
    if not xet.has_xorb(name):
        raise bad_request(f"Shard lists xorb {name}, which was not uploaded")
    stored = xet.xorb_index(name)
    listed = [
        (xethash.hash_hex(h), size) for h, size in zip(xorb.chunk_hashes, xorb.chunk_sizes, strict=True)
    ]
    if listed != [(c.hash, c.size) for c in stored]:
        raise bad_request(f"Shard's chunk list for xorb {name} differs from the xorb's chunks")


def _verified_terms(xet: XetStore, file: xet_formats.ShardFile) -> tuple[list[Term], list[xethash.Node]]:
    """The file's terms and its (chunk hash, size) leaves, each segment checked against its xorb."""
    terms: list[Term] = []
    leaves: list[xethash.Node] = []
    for number, segment in enumerate(file.segments):
        xorb = xethash.hash_hex(segment.xorb_hash)
        if not xet.has_xorb(xorb):
            raise bad_request(f"File segment {number} names xorb {xorb}, which is not stored")
        index = xet.xorb_index(xorb)
        if segment.chunk_end > len(index):
            raise bad_request(f"File segment {number} runs past the {len(index)} chunks of xorb {xorb}")
        chunks = index[segment.chunk_start : segment.chunk_end]
        if sum(c.size for c in chunks) != segment.unpacked_bytes:
            raise bad_request(f"File segment {number}'s byte count differs from its chunks'")
        raw_hashes = [xethash.hash_from_hex(c.hash) for c in chunks]
        if segment.range_hash is None:
            raise bad_request("Shard file entries must carry verification entries")
        if segment.range_hash != xethash.verification_range_hash(raw_hashes):
            raise bad_request(f"File segment {number}'s verification hash does not match xorb {xorb}")
        terms.append(Term(xorb, segment.chunk_start, segment.chunk_end, segment.unpacked_bytes))
        leaves += [(h, c.size) for h, c in zip(raw_hashes, chunks, strict=True)]
    return terms, leaves


def _register_file(cas: CasRequest, repo: RepoId, file: xet_formats.ShardFile) -> None:
    xet, store = cas.xet, cas.hub.store
    file_hash = xethash.hash_hex(file.file_hash)
    terms, leaves = _verified_terms(xet, file)
    if xethash.hash_hex(xethash.file_hash_of_chunks(leaves)) != file_hash:
        raise bad_request(f"File hash {file_hash} does not match its chunks")
    if file.sha256 is None:
        raise bad_request(f"File {file_hash} carries no sha256 (the shard's metadata extension)")
    sha256 = xethash.hash_hex(file.sha256)  # stored like the Xet hashes: each 8-byte word reversed
    record = FileRecord(sha256, sum(t.unpacked_bytes for t in terms), terms)
    if store.has_lfs(sha256):
        if store.xet_hash(sha256) != file_hash:
            raise bad_request(f"sha256 {sha256} is stored with another Xet hash than {file_hash}")
    else:
        _materialize(cas, record, file_hash)
    xet.put_file(file_hash, record)
    store.link_lfs(repo, sha256)


def _materialize(cas: CasRequest, record: FileRecord, file_hash: str) -> None:
    """Rebuild the file into the LFS store, refused unless its bytes match the sha256 and the spec's
    chunking of them gives the same file hash (the client's chunk boundaries are checked here)."""
    store = cas.hub.store
    tmp = store.tmp_path()
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as out:
            for piece in cas.xet.iter_file_bytes(record):
                digest.update(piece)
                out.write(piece)
            out.flush()
            os.fsync(out.fileno())
        if digest.hexdigest() != record.sha256:
            raise bad_request(f"File {file_hash}'s bytes do not match the sha256 its shard names")
        rechunked = xethash.xet_file_hash(tmp)
        if rechunked != file_hash:
            raise bad_request(
                f"File {file_hash}'s chunk boundaries do not follow the spec's chunking (it gives {rechunked})"
            )
        store.install_lfs(tmp, record.sha256, xet_hash=rechunked)
    finally:
        tmp.unlink(missing_ok=True)


def _upload_shard(cas: CasRequest) -> Response:
    repo = cas.need("write")
    try:
        shard = xet_formats.parse_shard(cas.body)
    except xet_formats.XetFormatError as exc:
        raise bad_request(f"Invalid shard: {exc}") from None
    for xorb in shard.xorbs:
        _check_shard_xorb(cas.xet, xorb)
    try:
        for file in shard.files:
            _register_file(cas, repo, file)
    except RepoNotFound:
        raise forbidden("This Xet CAS token's repository no longer exists") from None
    return JSONResponse({"result": 1})


# ---- downloads --------------------------------------------------------------------------------------


def _byte_range(header: str | None, size: int) -> tuple[int, int]:
    """[start, end) of the file asked for; 416 when it starts past the end."""
    if not header:
        return 0, size
    match = _RANGE_RE.match(header.strip())
    if not match or not (match[1] or match[2]):
        raise ApiError(416, f"Invalid range: {header}")
    if match[1]:
        start = int(match[1])
        end = min(int(match[2]) + 1, size) if match[2] else size
    else:
        start, end = max(size - int(match[2]), 0), size
    if start >= size or end <= start:
        raise ApiError(416, f"Range not satisfiable: {header} (file has {size} bytes)")
    return start, end


def _reconstruction(cas: CasRequest, repo: RepoId, file_hash: str) -> Response:
    record = cas.xet.record_for_repo(repo, file_hash)
    if record is None:
        raise forbidden(f"This Xet CAS token's repository holds no file with Xet hash {file_hash}")
    start, end = _byte_range(cas.request.headers.get("range"), record.size)
    endpoint = cas.endpoint
    expires = int(time.time()) + FETCH_URL_TTL_SECONDS
    signer = _signer(cas.hub)
    terms: list[dict[str, Any]] = []
    fetch_info: dict[str, list[dict[str, Any]]] = {}
    offset_into_first = 0
    position = 0  # file offset of the current chunk
    for term in record.terms:
        index: list[IndexedChunk] = cas.xet.xorb_index(term.xorb)
        first = last = None
        first_offset = 0
        for number in range(term.chunk_start, term.chunk_end):
            size = index[number].size
            if position + size > start and position < end:
                if first is None:
                    first, first_offset = number, position
                last = number
            position += size
        if first is None or last is None:
            continue
        if not terms:
            offset_into_first = start - first_offset
        chunk_range = {"start": first, "end": last + 1}
        unpacked = sum(c.size for c in index[first : last + 1])
        terms.append({"hash": term.xorb, "unpacked_length": unpacked, "range": chunk_range})
        url = f"{endpoint}{cas_base(cas.hub)}/v1/fetch/{term.xorb}?{signer.fetch_query(term.xorb, expires)}"
        byte_range = {"start": index[first].start, "end": index[last].end - 1}
        entries = fetch_info.setdefault(term.xorb, [])
        entry = {"range": chunk_range, "url": url, "url_range": byte_range}
        if entry not in entries:
            entries.append(entry)
    return JSONResponse(
        {"offset_into_first_range": offset_into_first, "terms": terms, "fetch_info": fetch_info}
    )


def _fetch_xorb(hub: Hub, request: Request, xorb: str) -> Response:
    params = request.query_params
    _signer(hub).check_fetch(xorb, params.get("exp", ""), params.get("sig", ""))
    xet = XetStore(hub.store)
    if not xet.has_xorb(xorb):
        raise ApiError(404, f"Xorb {xorb} not found")
    length = xet.xorb_length(xorb)
    start, end = _byte_range(request.headers.get("range"), length)
    status = 206 if request.headers.get("range") else 200
    headers = {"Content-Range": f"bytes {start}-{end - 1}/{length}", "Accept-Ranges": "bytes"}
    if request.method == "HEAD":
        return Response(b"", status_code=status, headers={**headers, "Content-Length": str(end - start)})
    with xet.xorb_path(xorb).open("rb") as f:
        f.seek(start)
        data = f.read(end - start)
    return Response(data, status_code=status, headers=headers, media_type="application/octet-stream")
