"""The local hub's Xet side, through the real huggingface_hub + hf_xet client over HTTP, and hand-built
xorbs and shards (from the spec's formats) for what a well-behaved client never sends."""

from __future__ import annotations

import hashlib
import io
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx2
import lz4.frame
import numpy as np
import pytest
from huggingface_hub import HfApi, constants, hf_hub_download

from hubfuse.localhub import LocalHub, xet_formats, xethash

# Random bytes, then zeros: hf_xet stores their chunks uncompressed, then LZ4-compressed;
# float32 weights: byte-grouped, then LZ4.
_RNG = np.random.default_rng(17)
DATA = _RNG.bytes(3 * 1024 * 1024) + bytes(1024 * 1024)
WEIGHTS = (_RNG.standard_normal(256 * 1024) * 0.02).astype(np.float32).tobytes()


def _schemes_stored(hub: LocalHub) -> set[int]:
    """The compression schemes of every chunk the hub stores (read from the xorbs' chunk headers)."""
    schemes = set()
    for xorb in (hub.data_dir / "xet" / "xorbs").glob("*/*"):
        if xorb.suffix:
            continue
        data, offset = xorb.read_bytes(), 0
        while offset < len(data):
            schemes.add(data[offset + 4])
            offset += xet_formats.CHUNK_HEADER_BYTES + int.from_bytes(data[offset + 1 : offset + 4], "little")
    return schemes


@pytest.fixture
def xet_on(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The client's Xet path (the suite's default), even when the environment turned it off."""
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", False)
    yield


def _paths(hub: LocalHub, since: int) -> list[str]:
    return [f"{r['method']} {r['path']}" for r in hub.requests(since)]


def _last_seq(hub: LocalHub) -> int:
    log = hub.requests()
    return log[-1]["seq"] if log else 0


def _cas_token(hub: LocalHub, token: str, repo: str, kind: str = "write") -> tuple[str, str]:
    """(CAS URL, CAS token) from the Hub's token route, as hf_xet asks for them."""
    answer = httpx2.get(
        f"{hub.endpoint}/api/models/{repo}/xet-{kind}-token/main",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert answer.headers["x-xet-cas-url"] == body["casUrl"]
    assert answer.headers["x-xet-access-token"] == body["accessToken"]
    assert int(answer.headers["x-xet-token-expiration"]) == body["exp"]
    return body["casUrl"], body["accessToken"]


def test_upload_and_download_go_through_xet(
    xet_on: None, hub: LocalHub, api: HfApi, repo_id: str, tmp_path: Path, users
) -> None:
    path = tmp_path / "model.safetensors"
    path.write_bytes(DATA)
    since = _last_seq(hub)
    api.upload_file(path_or_fileobj=str(path), path_in_repo="model.safetensors", repo_id=repo_id)
    api.upload_file(path_or_fileobj=WEIGHTS, path_in_repo="weights.bin", repo_id=repo_id)
    upload = _paths(hub, since)
    assert any("/v1/xorbs/default/" in p and p.startswith("POST") for p in upload), upload
    assert any(p.endswith("/v1/shards") and p.startswith("POST") for p in upload), upload
    assert not any("lfs" in p for p in upload), upload  # no classic LFS batch, no signed PUT
    schemes = (xet_formats.SCHEME_NONE, xet_formats.SCHEME_LZ4, xet_formats.SCHEME_BG4_LZ4)
    assert _schemes_stored(hub) >= set(schemes)  # each decompressed and hashed on the way in

    (entry,) = [e for e in api.list_repo_tree(repo_id) if e.path == "model.safetensors"]
    assert entry.xet_hash == xethash.xet_file_hash(path)
    assert entry.lfs.sha256 == hashlib.sha256(DATA).hexdigest()

    since = _last_seq(hub)
    local = hf_hub_download(
        repo_id, "model.safetensors", endpoint=hub.endpoint, token=users.alice, cache_dir=tmp_path / "c"
    )
    assert Path(local).read_bytes() == DATA
    local = hf_hub_download(
        repo_id, "weights.bin", endpoint=hub.endpoint, token=users.alice, cache_dir=tmp_path / "c"
    )
    assert Path(local).read_bytes() == WEIGHTS
    download = _paths(hub, since)
    assert any("/v1/reconstructions/" in p for p in download), download
    assert any("/v1/fetch/" in p for p in download), download
    assert not any(p.startswith("GET") and "/resolve/" in p for p in download), download  # no plain HTTP body


def test_upload_folder_through_xet_and_classic_lfs_objects_read_through_xet(
    xet_on: None, hub: LocalHub, api: HfApi, repo_id: str, tmp_path: Path, users
) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "a.bin").write_bytes(DATA[:1_500_000])
    (folder / "config.json").write_text('{"model_type": "bert"}')
    api.upload_folder(repo_id=repo_id, folder_path=folder)
    # An object uploaded through classic LFS gets its xorbs on its first Xet read.
    constants.HF_HUB_DISABLE_XET = True
    api.upload_file(path_or_fileobj=DATA[1_000_000:], path_in_repo="b.bin", repo_id=repo_id)
    constants.HF_HUB_DISABLE_XET = False
    since = _last_seq(hub)
    for name, expected in (("a.bin", DATA[:1_500_000]), ("b.bin", DATA[1_000_000:])):
        local = hf_hub_download(
            repo_id, name, endpoint=hub.endpoint, token=users.alice, cache_dir=tmp_path / "c"
        )
        assert Path(local).read_bytes() == expected
    assert sum("/v1/reconstructions/" in p for p in _paths(hub, since)) == 2


def test_resolve_carries_the_xet_headers(xet_on: None, hub: LocalHub, api: HfApi, repo_id: str) -> None:
    api.upload_file(path_or_fileobj=DATA[:100_000], path_in_repo="w.bin", repo_id=repo_id)
    head = httpx2.head(f"{hub.endpoint}/{repo_id}/resolve/main/w.bin")
    info = api.get_paths_info(repo_id, ["w.bin"])[0]
    assert head.headers["x-xet-hash"] == info.xet_hash
    assert f"/api/models/{repo_id}/xet-read-token/{head.headers['x-repo-commit']}" in head.headers["link"]
    assert 'rel="xet-auth"' in head.headers["link"]


# ---- hand-built xorbs and shards ---------------------------------------------------------------------


def _chunk(data: bytes, scheme: int = xet_formats.SCHEME_NONE) -> bytes:
    """One serialized chunk; byte grouping puts bytes 0, 1, 2, 3 (mod 4) together before LZ4."""
    grouped = b"".join(data[lane::4] for lane in range(4)) if scheme == xet_formats.SCHEME_BG4_LZ4 else data
    payload = grouped if scheme == xet_formats.SCHEME_NONE else lz4.frame.compress(grouped)
    header = (
        bytes([0]) + len(payload).to_bytes(3, "little") + bytes([scheme]) + len(data).to_bytes(3, "little")
    )
    return header + payload


def _xorb(chunks: list[bytes]) -> tuple[str, bytes]:
    body = b"".join(_chunk(c) for c in chunks)
    return xethash.hash_hex(xethash.xorb_hash((xethash.chunk_hash(c), len(c)) for c in chunks)), body


def _entry(raw_hash: bytes, *fields: int) -> bytes:
    return raw_hash + struct.pack("<IIII", *fields)


def _shard(xorb: str, chunks: list[bytes], data: bytes, *, range_hash: bytes | None = None) -> bytes:
    """A shard naming one file made of every chunk of one xorb, as the spec lays it out."""
    hashes = [xethash.chunk_hash(c) for c in chunks]
    file_hash = xethash.file_hash_of_chunks(zip(hashes, map(len, chunks), strict=True))
    flags = xet_formats.FILE_FLAG_VERIFICATION | xet_formats.FILE_FLAG_METADATA_EXT
    bookend = xet_formats.BOOKEND_HASH + bytes(16)
    sha256 = xethash.hash_from_hex(hashlib.sha256(data).hexdigest())
    parts = [
        xet_formats.SHARD_TAG + struct.pack("<QQ", xet_formats.SHARD_VERSION, 0),
        file_hash + struct.pack("<IIQ", flags, 1, 0),
        _entry(xethash.hash_from_hex(xorb), 0, len(data), 0, len(chunks)),
        (range_hash or xethash.verification_range_hash(hashes)) + bytes(16),
        sha256 + bytes(16),
        bookend,
        bookend,
    ]
    return b"".join(parts)


def _post(url: str, token: str | None, body: bytes) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx2.post(url, content=body, headers=headers)


def test_a_xorb_is_verified_chunk_by_chunk(hub: LocalHub, users, repo_id: str) -> None:
    cas, token = _cas_token(hub, users.alice, repo_id)
    chunks = [WEIGHTS[:70_001], bytes(40_000)]  # an odd length: the last byte group is short
    name, body = _xorb(chunks)
    corrupted = bytearray(body)
    corrupted[100] ^= 1  # a bit flipped in the first chunk's data: its hash changes
    answer = _post(f"{cas}/v1/xorbs/default/{name}", token, bytes(corrupted))
    assert answer.status_code == 400 and "hash mismatch" in answer.text.lower()
    truncated = _post(f"{cas}/v1/xorbs/default/{name}", token, body[:-10])
    assert truncated.status_code == 400 and "truncated" in truncated.text
    lz4_body = _chunk(chunks[0], xet_formats.SCHEME_BG4_LZ4) + _chunk(chunks[1], xet_formats.SCHEME_LZ4)
    assert len(lz4_body) < len(body)
    stored = _post(f"{cas}/v1/xorbs/default/{name}", token, lz4_body)
    assert stored.status_code == 200 and stored.json() == {"was_inserted": True}
    bad_frame = _chunk(chunks[0], xet_formats.SCHEME_LZ4)[:8] + b"not an lz4 frame"
    refused = _post(f"{cas}/v1/xorbs/default/{name}", token, bad_frame)
    assert refused.status_code == 400 and "chunk" in refused.text


def test_a_shard_is_verified_against_its_xorbs_and_the_spec_chunking(
    hub: LocalHub, users, repo_id: str
) -> None:
    cas, token = _cas_token(hub, users.alice, repo_id)
    data = DATA[:400_000]
    # Fixed 50 kB pieces: valid chunks, but not where the spec's content-defined chunking cuts.
    fixed = [data[i : i + 50_000] for i in range(0, len(data), 50_000)]
    cdc = list(xethash.iter_chunks(io.BytesIO(data)))
    assert len(cdc) > 1 and [len(c) for c in cdc] != [len(c) for c in fixed]
    for chunks in (fixed, cdc):
        name, body = _xorb(chunks)
        assert _post(f"{cas}/v1/xorbs/default/{name}", token, body).status_code == 200
    fixed_name, cdc_name = _xorb(fixed)[0], _xorb(cdc)[0]

    wrong_range = _post(f"{cas}/v1/shards", token, _shard(cdc_name, cdc, data, range_hash=bytes(32)))
    assert wrong_range.status_code == 400 and "verification" in wrong_range.text
    unknown = _post(f"{cas}/v1/shards", token, _shard("ab" * 32, cdc, data))
    assert unknown.status_code == 400 and "not stored" in unknown.text
    not_cdc = _post(f"{cas}/v1/shards", token, _shard(fixed_name, fixed, data))
    assert not_cdc.status_code == 400 and "chunk boundaries" in not_cdc.text
    assert _post(f"{cas}/v1/shards", token, b"not a shard" * 10).status_code == 400

    accepted = _post(f"{cas}/v1/shards", token, _shard(cdc_name, cdc, data))
    assert accepted.status_code == 200, accepted.text
    # The file is now an LFS object of this repo: a commit may name it by sha256.
    batch = httpx2.post(
        f"{hub.endpoint}/{repo_id}.git/info/lfs/objects/batch",
        json={
            "operation": "upload",
            "transfers": ["basic"],
            "objects": [{"oid": hashlib.sha256(data).hexdigest(), "size": len(data)}],
        },
        headers={"Authorization": f"Bearer {users.alice}"},
    )
    assert "actions" not in batch.json()["objects"][0]  # held: nothing to upload


def test_cas_calls_need_a_token_of_the_right_repo_and_scope(
    xet_on: None, hub: LocalHub, users, api: HfApi, repo_id: str
) -> None:
    api.upload_file(path_or_fileobj=DATA[:200_000], path_in_repo="w.bin", repo_id=repo_id)
    xet_hash = api.get_paths_info(repo_id, ["w.bin"])[0].xet_hash
    cas, read_token = _cas_token(hub, users.alice, repo_id, "read")
    recon = f"{cas}/v1/reconstructions/{xet_hash}"
    assert httpx2.get(recon, headers={"Authorization": f"Bearer {read_token}"}).status_code == 200
    assert httpx2.get(recon).status_code == 401
    assert httpx2.get(recon, headers={"Authorization": "Bearer xet_forged.token"}).status_code == 401
    assert (
        httpx2.get(recon, headers={"Authorization": f"Bearer {users.alice}"}).status_code == 401
    )  # a Hub token
    other = HfApi(endpoint=hub.endpoint, token=users.bob).create_repo("bob/xet-other", exist_ok=True).repo_id
    _, bobs_token = _cas_token(hub, users.bob, other, "read")
    assert httpx2.get(recon, headers={"Authorization": f"Bearer {bobs_token}"}).status_code == 403
    name, body = _xorb([DATA[:20_000]])
    assert _post(f"{cas}/v1/xorbs/default/{name}", read_token, body).status_code == 403  # read-only token
    assert _post(f"{cas}/v1/xorbs/default/{name}", None, body).status_code == 401
    # The write token route takes a write token of the repo's namespace.
    for token, status in ((users.alice_read, 403), (users.bob, 403), (None, 401)):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        assert (
            httpx2.get(
                f"{hub.endpoint}/api/models/{repo_id}/xet-write-token/main", headers=headers
            ).status_code
            == status
        )


def test_a_ranged_reconstruction_rebuilds_exactly_that_range(
    xet_on: None, hub: LocalHub, users, api: HfApi, repo_id: str
) -> None:
    api.upload_file(path_or_fileobj=DATA, path_in_repo="w.bin", repo_id=repo_id)
    xet_hash = api.get_paths_info(repo_id, ["w.bin"])[0].xet_hash
    cas, token = _cas_token(hub, users.alice, repo_id, "read")
    auth = {"Authorization": f"Bearer {token}"}
    start, end = 1_000_001, 3_500_000  # inclusive; crosses chunk and compression boundaries
    plan = httpx2.get(
        f"{cas}/v1/reconstructions/{xet_hash}", headers={**auth, "Range": f"bytes={start}-{end}"}
    )
    assert plan.status_code == 200, plan.text
    body = plan.json()
    pieces = []
    for term in body["terms"]:
        (fetch,) = [f for f in body["fetch_info"][term["hash"]] if f["range"] == term["range"]]
        url_range = fetch["url_range"]
        raw = httpx2.get(fetch["url"], headers={"Range": f"bytes={url_range['start']}-{url_range['end']}"})
        assert raw.status_code == 206
        unpacked = b"".join(xet_formats.iter_xorb_chunks(raw.content))
        assert len(unpacked) == term["unpacked_length"]
        pieces.append(unpacked)
    offset = body["offset_into_first_range"]
    assert b"".join(pieces)[offset : offset + end - start + 1] == DATA[start : end + 1]
    past_end = httpx2.get(
        f"{cas}/v1/reconstructions/{xet_hash}", headers={**auth, "Range": f"bytes={len(DATA)}-"}
    )
    assert past_end.status_code == 416
    signed = body["fetch_info"][body["terms"][0]["hash"]][0]["url"]
    assert (
        httpx2.get(signed.replace("sig=", "sig=x")).status_code == 403
    )  # the fetch URL is its own authorisation


def test_a_file_deduplicated_against_another_repos_xorbs_becomes_this_repos(
    xet_on: None, hub: LocalHub, api: HfApi, repo_id: str, users, tmp_path: Path
) -> None:
    payload = DATA[:2_000_000]
    api.upload_file(path_or_fileobj=payload, path_in_repo="w.bin", repo_id=repo_id)
    other = api.create_repo(f"{repo_id}-again", exist_ok=True).repo_id
    since = _last_seq(hub)
    api.upload_file(path_or_fileobj=payload, path_in_repo="w.bin", repo_id=other)
    upload = _paths(hub, since)
    # The client already sent these chunks: only a shard goes up, naming the stored xorbs with
    # verification hashes that prove it holds their chunks (the spec's cross-repo deduplication).
    assert not any("/v1/xorbs/" in p and p.startswith("POST") for p in upload), upload
    assert any(p.endswith("/v1/shards") and p.startswith("POST") for p in upload), upload
    local = hf_hub_download(
        other, "w.bin", endpoint=hub.endpoint, token=users.alice, cache_dir=tmp_path / "c"
    )
    assert Path(local).read_bytes() == payload
