"""Benchmark `hubfuse run` over many tiny repos on the local Hub: a first run, then a rerun.

    python bench/batch.py [--repos 200] [--shards 1,4] [--out bench/results/batch.json] [--data DIR]

One local Hub (its own server process, fresh data under `--data`, default `bench/.data/batch`),
one write token for user `bench-bot`, member of every organisation below. For each shard count K
of `--shards`, in its own organisation (`bench` for K=1, `bench4` for K=4, ...) with its own ledger
dataset (`ORG/hubfuse-ledger`):

1. seed `--repos` N repos `ORG/tiny-000` ...: one tiny Qwen3-VL checkpoint (fusion safe) made once
   and uploaded to every repo, except every 10th repo (`--plain-every`), which gets a tiny Llama
   (nothing to fuse: outcome `not_applicable`). `create_repo` + `upload_folder` in 8 threads;
   the seeding time is reported apart. Then the server's request log is cleared.
2. first run: K concurrent `python -m hubfuse run SPEC --shard I/K --json` processes, each with a
   fresh HF_HOME and HUBFUSE_CACHE (a fresh CI runner). The spec selects `repos: {author: ORG}`,
   no variant, `max_prs: 1000`, a request budget of 10^6, and the ledger `ORG/hubfuse-ledger`.
3. second run: the same, nothing changed on the Hub, again with fresh HF_HOME and HUBFUSE_CACHE:
   only the ledger can make it cheap.

For each run: wall time (launch to the last shard's exit; each shard's own too), the server's
request log (count, per unchanged repo, by kind of request), the bytes the server sent for file
downloads (`/resolve/`, model files and ledger apart) and in all, each shard's outcome counts and
its own API-call count, and how many cores the machine kept busy. Afterwards: the ledger holds
exactly one record per repo (no record lost to concurrent shards), every Qwen3-VL repo has exactly
one open hubfuse PR and every plain repo none, and every repo belongs to exactly one shard.

`--downstream SPEC` (default `none`) runs the downstream matrix of those releases for every repo
(`HUBFUSE_DOWNSTREAM_VERSIONS` of the shards; the environments from `$HUBFUSE_ENVS`, as the
workflows restore them): cells are shared by proven case, so the matrix should cost about what it
costs for one repo. Each shard's probes run and cells reused are counted from its log.

A run is stopped at the `--max-minutes` deadline (default 25) for the whole benchmark; what did
not fit is reported as such. Writes `--out` (JSON) and the Markdown next to it (`.md`), prints the
Markdown. The data directory is deleted at the end unless `--keep`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _common import (
    REPO,
    become_subreaper,
    bytes_received,
    bytes_sent,
    environment,
    hub_server_pid,
    human_bytes,
    is_download,
    isolate_hub_client,
    machine_busy_cpu_s,
    md_row,
    md_rule,
    other_busy_cores,
    process_cpu_s,
    reap_orphans,
    reaped_children_cpu_s,
    seed_repo,
    self_cpu_s,
    write_report,
)

USER = "bench-bot"
SPEC_NAME = "bench-batch"
SEED_THREADS = 8
STARTUP_MARGIN_S = 30.0
MIN_REPOS = 4
FIT_FACTOR = 1.2
FIT_RESERVE_S = 90.0


def org_for(shards: int) -> str:
    return "bench" if shards == 1 else f"bench{shards}"


# --- seeding -------------------------------------------------------------------------------------


def make_checkpoints(folder: Path) -> dict[str, Path]:
    from hubfuse.testing.synth import make_plain_checkpoint, make_tiny_checkpoint

    paths = {"qwen3_vl": folder / "qwen3_vl", "plain": folder / "plain"}
    make_tiny_checkpoint("qwen3_vl", paths["qwen3_vl"])
    make_plain_checkpoint(paths["plain"])
    return paths


def repo_kinds(org: str, n: int, plain_every: int) -> dict[str, str]:
    return {
        f"{org}/tiny-{i:03d}": "plain" if plain_every and i % plain_every == plain_every - 1 else "qwen3_vl"
        for i in range(n)
    }


def seed(endpoint: str, token: str, kinds: dict[str, str], checkpoints: dict[str, Path]) -> dict[str, Any]:
    from huggingface_hub import HfApi

    api = HfApi(endpoint=endpoint, token=token)

    def one(repo_id: str) -> None:
        seed_repo(api, repo_id, checkpoints[kinds[repo_id]])

    start = time.perf_counter()
    with ThreadPoolExecutor(SEED_THREADS) as pool:
        list(pool.map(one, sorted(kinds)))
    seconds = time.perf_counter() - start
    return {
        "seconds": round(seconds, 2),
        "threads": SEED_THREADS,
        "per_repo_s": round(seconds / len(kinds), 3),
    }


def write_spec(folder: Path, org: str) -> Path:
    path = folder / f"{org}.yml"
    path.write_text(
        f"name: {SPEC_NAME}\n"
        f"repos:\n  author: {org}\n"
        "limits:\n  max_prs: 1000\n  request_budget: 1000000\n"
        f"ledger:\n  repo: {org}/hubfuse-ledger\n"
    )
    return path


# --- running the shards --------------------------------------------------------------------------


def run_shards(
    spec: Path,
    shards: int,
    endpoint: str,
    token: str,
    work: Path,
    deadline: float,
    server_pid: int | None,
    downstream: str = "none",
) -> dict[str, Any]:
    """K concurrent `hubfuse run` processes, each as on a fresh runner; stdout/stderr to files.

    Output goes to files, not pipes, and each CLI is waited for by pid: its forkserver may outlive it,
    and a pipe reader would wait for that too.
    """
    procs = []
    exclude = {server_pid} if server_pid else set()
    reap_orphans(exclude)
    cpu0, start = machine_busy_cpu_s(), time.perf_counter()
    own0, children0, server0 = self_cpu_s(), reaped_children_cpu_s(), process_cpu_s(server_pid)
    for index in range(1, shards + 1):
        folder = work / f"shard-{index}"
        folder.mkdir(parents=True)
        env = {
            **os.environ,
            "HF_ENDPOINT": endpoint,
            "HF_TOKEN": token,
            "HF_HOME": str(folder / "hf-home"),
            "HUBFUSE_CACHE": str(folder / "verdicts"),
            "TMPDIR": str(folder),
            "HUBFUSE_DOWNSTREAM_VERSIONS": downstream,
        }
        env.pop("GITHUB_STEP_SUMMARY", None)
        command = [sys.executable, "-m", "hubfuse", "run", str(spec), "--json"]
        if shards > 1:
            command += ["--shard", f"{index}/{shards}"]
        with open(folder / "stdout.json", "w") as out, open(folder / "stderr.log", "w") as err:
            proc = subprocess.Popen(
                command, stdout=out, stderr=err, env=env, cwd=folder, start_new_session=True
            )
        procs.append((index, proc, folder, time.perf_counter()))
    ended: dict[int, float] = {}
    timed_out = False
    while len(ended) < len(procs):
        for index, proc, _folder, _launched in procs:
            if index not in ended and proc.poll() is not None:
                ended[index] = time.perf_counter()
        if time.monotonic() > deadline and len(ended) < len(procs):
            timed_out = True
            for index, proc, _folder, _launched in procs:
                if index not in ended:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    ended[index] = time.perf_counter()
        time.sleep(0.05)
    shard_results = []
    for index, proc, folder, launched in procs:
        wall = ended[index] - launched
        try:
            summary = json.loads((folder / "stdout.json").read_text())
        except ValueError:
            summary = None
        stderr = (folder / "stderr.log").read_text(errors="replace")
        shard_results.append(
            {
                "shard": f"{index}/{shards}",
                "exit_code": proc.returncode,
                "wall_s": round(wall, 2),
                "counts": summary["counts"] if summary else None,
                "hubfuse_api_calls": summary["requests"] if summary else None,
                "stopped": summary["stopped"] if summary else None,
                "repos": {r["repo_id"]: r["outcome"] for r in summary["repos"]} if summary else {},
                "stderr_tail": None if proc.returncode == 0 else stderr[-3000:],
                "matrix_probes": len(re.findall(r"matrix: environment \d+/\d+ ready", stderr)),
                "matrix_cells_reused": len(re.findall(r"matrix: cell \d+/\d+ done: .*\(same case\)", stderr)),
            }
        )
    wall = time.perf_counter() - start
    busy = machine_busy_cpu_s() - cpu0
    server_cpu = process_cpu_s(server_pid) - server0
    own_cpu = self_cpu_s() - own0
    # Forkservers outlive their CLI: wait for them, so that their CPU is counted (and not in the next run).
    orphans_s = reap_orphans(exclude)
    hubfuse_cpu = reaped_children_cpu_s() - children0
    return {
        "wall_s": round(wall, 2),
        "max_shard_wall_s": max(s["wall_s"] for s in shard_results),
        "cores_busy": round(busy / wall, 2),
        "hubfuse_cpu_s": round(hubfuse_cpu, 1),
        "server_cpu_s": round(server_cpu, 1),
        "other_cores_busy": round(other_busy_cores(busy, hubfuse_cpu + server_cpu + own_cpu, wall), 2),
        "orphans_outlived_s": round(orphans_s, 2),
        "timed_out": timed_out,
        "shards": shard_results,
    }


# --- the request log -----------------------------------------------------------------------------


def request_kind(entry: dict[str, Any], org: str) -> str:
    path = entry["path"].replace(f"{org}/hubfuse-ledger", "{ledger}")
    path = re.sub(rf"{re.escape(org)}/tiny-\d+", "{repo}", path)
    path = re.sub(r"\b[0-9a-f]{40}\b", "{sha}", path)
    path = re.sub(r"/discussions/\d+", "/discussions/{n}", path)
    return f"{entry['method']} {path}"


def analyse(entries: list[dict[str, Any]], org: str, n: int) -> dict[str, Any]:
    resolve = [e for e in entries if is_download(e)]
    ledger_resolve = [e for e in resolve if e["path"].startswith("/datasets/")]
    model_resolve = [e for e in resolve if not e["path"].startswith("/datasets/")]
    kinds = Counter(request_kind(e, org) for e in entries)
    per_repo = sum(count for kind, count in kinds.items() if "{repo}" in kind)
    return {
        "requests": len(entries),
        "requests_per_repo": round(len(entries) / n, 3),
        "per_repo_requests": per_repo,  # requests naming one of the N repos
        "fixed_requests": len(entries) - per_repo,
        "errors": sum(1 for e in entries if e["status"] >= 400 or e["status"] == 0),
        "status_counts": dict(sorted(Counter(str(e["status"]) for e in entries).items())),
        "bytes_sent": bytes_sent(entries),
        "bytes_received": bytes_received(entries),
        "model_file_bytes": bytes_sent(model_resolve),
        "model_file_requests": len(model_resolve),
        "ledger_file_bytes": bytes_sent(ledger_resolve),
        "ledger_file_requests": len(ledger_resolve),
        "by_kind": dict(kinds.most_common()),
    }


# --- checks afterwards ---------------------------------------------------------------------------


def check_results(endpoint: str, token: str, org: str, kinds: dict[str, str], shards: int) -> dict[str, Any]:
    from huggingface_hub import HfApi, hf_hub_download

    from hubfuse.batch import Shard
    from hubfuse.render.markers import PR_TITLE_SUFFIX

    api = HfApi(endpoint=endpoint, token=token)
    path = hf_hub_download(
        f"{org}/hubfuse-ledger",
        f"ledgers/{SPEC_NAME}.json",
        repo_type="dataset",
        endpoint=endpoint,
        token=token,
        force_download=True,
    )
    ledger_text = Path(path).read_text()
    records = json.loads(ledger_text)["records"]
    commits = api.list_repo_commits(f"{org}/hubfuse-ledger", repo_type="dataset")

    def prs(repo_id: str) -> list[dict[str, Any]]:
        return [
            {"num": d.num, "status": d.status}
            for d in api.get_repo_discussions(repo_id, discussion_type="pull_request")
            if d.author == USER and PR_TITLE_SUFFIX in d.title
        ]

    with ThreadPoolExecutor(8) as pool:
        found = dict(zip(sorted(kinds), pool.map(prs, sorted(kinds)), strict=True))
    expected_prs = {repo: int(kind == "qwen3_vl") for repo, kind in kinds.items()}
    wrong_prs = {
        repo: found[repo]
        for repo in kinds
        if len(found[repo]) != expected_prs[repo] or any(p["status"] != "open" for p in found[repo])
    }
    owners = Counter(sum(Shard(i, shards).owns(repo) for i in range(1, shards + 1)) for repo in kinds)
    return {
        "ledger_records": len(records),
        "ledger_bytes": len(ledger_text.encode()),
        "ledger_commits": len(commits),
        "ledger_missing": sorted(set(kinds) - set(records)),
        "ledger_extra": sorted(set(records) - set(kinds)),
        "ledger_outcomes": dict(sorted(Counter(r["outcome"] for r in records.values()).items())),
        "open_hubfuse_prs": sum(len(v) for v in found.values()),
        "repos_with_wrong_prs": wrong_prs,
        "repos_owned_by_exactly_one_shard": owners.get(1, 0),
        "shard_sizes": [sum(Shard(i, shards).owns(repo) for repo in kinds) for i in range(1, shards + 1)],
    }


def expected_outcomes(kinds: dict[str, str], run: str) -> dict[str, str]:
    if run == "second":
        return dict.fromkeys(kinds, "skipped")
    return {repo: "published" if kind == "qwen3_vl" else "not_applicable" for repo, kind in kinds.items()}


# --- one scenario --------------------------------------------------------------------------------


def scenario(
    hub: Any, token: str, shards: int, n: int, plain_every: int, checkpoints: dict[str, Path], work: Path,
    deadline: float, downstream: str = "none",
) -> dict[str, Any]:  # fmt: skip
    org = org_for(shards)
    kinds = repo_kinds(org, n, plain_every)
    result: dict[str, Any] = {
        "shards": shards,
        "org": org,
        "ledger": f"{org}/hubfuse-ledger",
        "repos": n,
        "qwen3_vl_repos": sum(k == "qwen3_vl" for k in kinds.values()),
        "plain_repos": sum(k == "plain" for k in kinds.values()),
        "runs": {},
    }
    print(f"[{org}] seeding {n} repos ...", file=sys.stderr, flush=True)
    result["seeding"] = seed(hub.endpoint, token, kinds, checkpoints)
    spec = write_spec(work, org)
    for run in ("first", "second"):
        if deadline - time.monotonic() < STARTUP_MARGIN_S:
            result["runs"][run] = {"skipped": "the --max-minutes deadline"}
            continue
        print(f"[{org}] {run} run, {shards} shard(s) ...", file=sys.stderr, flush=True)
        hub.clear_requests()
        ran = run_shards(
            spec,
            shards,
            hub.endpoint,
            token,
            work / f"{org}-{run}",
            deadline,
            hub_server_pid(hub),
            downstream,
        )
        entries = hub.requests()
        (work / f"{org}-{run}" / "requests.json").write_text(json.dumps(entries))
        ran["server"] = analyse(entries, org, n)
        outcomes: dict[str, str] = {}
        for shard in ran["shards"]:
            outcomes.update(shard.pop("repos"))
        expected = expected_outcomes(kinds, run)
        ran["outcomes"] = dict(sorted(Counter(outcomes.values()).items()))
        ran["unexpected_outcomes"] = {
            repo: outcomes.get(repo, "missing") for repo in kinds if outcomes.get(repo) != expected[repo]
        }
        ran["per_repo_wall_s"] = round(ran["wall_s"] / n, 3)
        ran["matrix_probes"] = sum(shard["matrix_probes"] for shard in ran["shards"])
        ran["matrix_cells_reused"] = sum(shard["matrix_cells_reused"] for shard in ran["shards"])
        print(
            f"[{org}] {run}: {ran['wall_s']} s, {ran['server']['requests']} requests, {ran['outcomes']}",
            file=sys.stderr,
            flush=True,
        )
        result["runs"][run] = ran
    if any("wall_s" in r for r in result["runs"].values()):
        hub.clear_requests()
        result["checks"] = check_results(hub.endpoint, token, org, kinds, shards)
    return result


# --- report --------------------------------------------------------------------------------------


def render(result: dict[str, Any]) -> str:
    env = result["environment"]
    sizes = ", ".join(f"**{sc['repos']}** with {sc['shards']} shard(s)" for sc in result["scenarios"])
    lines = [
        "# `hubfuse run` over many tiny repos on the local Hub",
        "",
        f"{env['date']}, hubfuse {env['hubfuse_commit']}, torch {env['torch']}, transformers "
        f"{env['transformers']}, huggingface_hub {env['huggingface_hub']}, Python {env['python']}, "
        f"{env['cpus']} CPUs. Generated by `python bench/batch.py --repos {result['repos']}` in "
        f"{result['benchmark_wall_s']:.0f} s. Downstream matrix: `{result.get('downstream', 'none')}`.",
        "",
        f"N repos per scenario ({sizes}; asked for {result['repos']}): every {result['plain_every']}th a plain Llama, "
        "the rest one tiny Qwen3-VL checkpoint, no variant. Every run on fresh HF_HOME and "
        "HUBFUSE_CACHE (a new CI runner); the second run changes nothing on the Hub. K shards run as K "
        "concurrent processes. Requests, bytes: the local Hub's own log of that run. "
        "Model-file / ledger bytes: what the server sent for `/resolve/` downloads of the N repos' files "
        "and of the ledger file. CPU: the `hubfuse run` processes with their workers, and the local Hub's "
        "process; other load: the rest of the machine's busy time over the wall time (other processes).",
        "",
        "| scenario | run | wall | wall / repo | CPU: hubfuse / hub server | other load | requests "
        "| requests / repo | model-file bytes | ledger bytes | bytes sent, all | outcomes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for sc in result["scenarios"]:
        for run, ran in sc["runs"].items():
            name = f"{sc['shards']} shard{'s' if sc['shards'] > 1 else ''}, N={sc['repos']} (`{sc['org']}`)"
            if "wall_s" not in ran:
                lines.append(f"| {name} | {run} | not run: {ran.get('skipped')} | | | | | | | | | |")
                continue
            srv = ran["server"]
            outcomes = ", ".join(f"{k} {v}" for k, v in ran["outcomes"].items())
            wall = f"{ran['wall_s']:.1f} s" + (" (timed out)" if ran["timed_out"] else "")
            lines.append(
                f"| {name} | {run} | {wall} | {ran['per_repo_wall_s']:.2f} s "
                f"| {ran['hubfuse_cpu_s']:.0f} s / {ran['server_cpu_s']:.1f} s | {ran['other_cores_busy']:.2f} cores "
                f"| {srv['requests']} | {srv['requests_per_repo']:.2f} | {human_bytes(srv['model_file_bytes'])} "
                f"| {human_bytes(srv['ledger_file_bytes'])} | {human_bytes(srv['bytes_sent'])} | {outcomes} |"
            )
    lines += [
        "",
        "## Downstream matrix",
        "",
        "Probes run (one per release and environment column, counted from each shard's log) and cells "
        "reused from a repo of the same case (memory, local cache or beside the ledger).",
        "",
        "| scenario | run | probes run | cells reused |",
        "|---|---|---:|---:|",
    ]
    for sc in result["scenarios"]:
        for run, ran in sc["runs"].items():
            if "wall_s" in ran:
                lines.append(
                    f"| {sc['shards']} shard(s) | {run} | {ran.get('matrix_probes', '-')} "
                    f"| {ran.get('matrix_cells_reused', '-')} |"
                )
    lines += ["", "## Seeding and checks", ""]
    lines += [
        "| scenario | seeding | ledger records | lost records | ledger size / commits | open hubfuse PRs "
        "| repos with wrong PRs | shard sizes |",
        "|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for sc in result["scenarios"]:
        chk = sc.get("checks")
        seeding = f"{sc['seeding']['seconds']:.1f} s ({sc['seeding']['threads']} threads)"
        if not chk:
            lines.append(f"| {sc['shards']} shard(s) | {seeding} | - | - | - | - | - | - |")
            continue
        lines.append(
            f"| {sc['shards']} shard(s) | {seeding} | {chk['ledger_records']} / {sc['repos']} "
            f"| {len(chk['ledger_missing'])} | {human_bytes(chk['ledger_bytes'])} / {chk['ledger_commits']} "
            f"| {chk['open_hubfuse_prs']} (expected {sc['qwen3_vl_repos']}) | {len(chk['repos_with_wrong_prs'])} "
            f"| {', '.join(map(str, chk['shard_sizes']))} |"
        )
    lines += [
        "",
        "## Per shard",
        "",
        "| scenario | run | shard | wall | exit | API calls (hubfuse's count) | outcomes |",
    ]
    lines += ["|---|---|---|---:|---:|---:|---|"]
    for sc in result["scenarios"]:
        for run, ran in sc["runs"].items():
            for shard in ran.get("shards", []):
                counts = ", ".join(f"{k} {v}" for k, v in (shard["counts"] or {}).items())
                lines.append(
                    f"| {sc['shards']} shard(s) | {run} | {shard['shard']} | {shard['wall_s']:.1f} s "
                    f"| {shard['exit_code']} | {shard['hubfuse_api_calls']} | {counts} |"
                )
    lines += ["", "## Requests by kind", ""]
    for sc in result["scenarios"]:
        for run, ran in sc["runs"].items():
            if "server" not in ran:
                continue
            srv = ran["server"]
            lines += [
                f"{sc['shards']} shard(s), {run} run: {srv['requests']} requests "
                f"({srv['per_repo_requests']} name one of the {sc['repos']} repos, {srv['fixed_requests']} do not; "
                f"status {srv['status_counts']}).",
                "",
                md_row("requests", "kind"),
                md_rule("---:", "---"),
                *[md_row(count, f"`{kind}`") for kind, count in srv["by_kind"].items()],
                "",
            ]
    if result.get("notes"):
        lines += ["## Notes", "", *[f"- {note}" for note in result["notes"]], ""]
    return "\n".join(lines).rstrip() + "\n"


def notes(result: dict[str, Any]) -> list[str]:
    """What the numbers say against the targets: few requests and no bytes for unchanged repos."""
    found = [
        f"{shards} shard(s): not run, the --max-minutes deadline left too little time"
        for shards in result.get("skipped_scenarios", [])
    ]
    for sc in result["scenarios"]:
        label = f"{sc['shards']} shard(s)"
        if sc["repos"] < result["repos"]:
            found.append(
                f"{label}: {sc['repos']} repos, not {result['repos']}: what the --max-minutes deadline left "
                "at the pace of the scenario before"
            )
        for run, ran in sc["runs"].items():
            if "server" not in ran:
                continue
            if ran["unexpected_outcomes"]:
                some = dict(list(ran["unexpected_outcomes"].items())[:5])
                found.append(
                    f"{label}, {run} run: {len(ran['unexpected_outcomes'])} unexpected outcomes, e.g. {some}"
                )
            if ran["timed_out"] or any(s["exit_code"] != 0 for s in ran["shards"]):
                codes = [s["exit_code"] for s in ran["shards"]]
                found.append(f"{label}, {run} run: exit codes {codes}, timed out: {ran['timed_out']}")
            if run == "second":
                if ran["server"]["model_file_bytes"]:
                    found.append(
                        f"{label}, second run downloaded {ran['server']['model_file_bytes']} bytes of model files"
                    )
                if ran["server"]["requests_per_repo"] > 1:
                    found.append(
                        f"{label}, second run: {ran['server']['requests_per_repo']} requests per unchanged repo"
                    )
        chk = sc.get("checks")
        if chk and (chk["ledger_missing"] or chk["ledger_extra"]):
            found.append(
                f"{label}: ledger lost {len(chk['ledger_missing'])} records: {chk['ledger_missing'][:10]}"
            )
        if chk and chk["repos_with_wrong_prs"]:
            some = dict(list(chk["repos_with_wrong_prs"].items())[:5])
            found.append(
                f"{label}: {len(chk['repos_with_wrong_prs'])} repos without exactly the expected PRs, e.g. {some}"
            )
    return found


def fit_repos(previous: dict[str, Any], wanted: int, deadline: float) -> int:
    """The most repos the next scenario can take before the deadline, at the previous one's pace.

    Its first run's wall time per repo, plus a fifth (K concurrent shards on few cores pay K
    interpreter and worker start-ups), and a reserve for seeding, the second run and the checks.
    """
    first = previous.get("runs", {}).get("first", {})
    if "per_repo_wall_s" not in first:
        return wanted
    per_repo = first["per_repo_wall_s"] * FIT_FACTOR
    reserve = FIT_RESERVE_S + 2 * previous["seeding"]["per_repo_s"] * wanted
    return max(0, min(wanted, int((deadline - time.monotonic() - reserve) / per_repo)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repos", type=int, default=200, help="repos per scenario")
    parser.add_argument("--shards", default="1,4", help="shard counts, one scenario each (default 1,4)")
    parser.add_argument("--plain-every", type=int, default=10, help="every Nth repo a plain model (0: none)")
    parser.add_argument("--out", type=Path, default=REPO / "bench/results/batch.json")
    parser.add_argument("--data", type=Path, default=REPO / "bench/.data/batch")
    parser.add_argument("--max-minutes", type=float, default=25.0, help="deadline for the whole benchmark")
    parser.add_argument(
        "--fit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="shrink a later scenario's repo count to what the deadline leaves, at the pace measured so far",
    )
    parser.add_argument(
        "--downstream", default="none", help="downstream releases for every repo, e.g. '==5.5.4 || ==5.24.0'"
    )
    parser.add_argument("--keep", action="store_true", help="keep the hub and the runs' caches in --data")
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.max_minutes * 60
    data = args.data.resolve()
    shutil.rmtree(data, ignore_errors=True)
    work = data / "runs"
    work.mkdir(parents=True)

    isolate_hub_client(data / "bench-hf-home")  # before huggingface_hub is imported
    from hubfuse.localhub import LocalHub

    subreaper = become_subreaper()

    start = time.perf_counter()
    result: dict[str, Any] = {
        "environment": environment(("torch", "transformers", "huggingface_hub"), dirty_paths=("hubfuse",)),
        "repos": args.repos,
        "plain_every": args.plain_every,
        "max_minutes": args.max_minutes,
        "downstream": args.downstream,
        "subreaper": subreaper,
        "scenarios": [],
    }
    try:
        checkpoints = make_checkpoints(data / "checkpoints")
        with LocalHub(data / "hub", subprocess=True) as hub:
            shard_counts = [int(k) for k in args.shards.split(",")]
            token = hub.add_token(USER, role="write", orgs=[org_for(k) for k in shard_counts])
            n = args.repos
            for shards in shard_counts:
                if result["scenarios"] and args.fit:
                    n = fit_repos(result["scenarios"][-1], args.repos, deadline)
                if n < MIN_REPOS or deadline - time.monotonic() < STARTUP_MARGIN_S:
                    result["scenarios"].append({"shards": shards, "skipped": "the --max-minutes deadline"})
                    continue
                result["scenarios"].append(
                    scenario(
                        hub, token, shards, n, args.plain_every, checkpoints, work, deadline, args.downstream
                    )
                )
    finally:
        if not args.keep:
            shutil.rmtree(data, ignore_errors=True)
    result["skipped_scenarios"] = [sc["shards"] for sc in result["scenarios"] if "runs" not in sc]
    result["scenarios"] = [sc for sc in result["scenarios"] if "runs" in sc]
    result["benchmark_wall_s"] = round(time.perf_counter() - start, 1)
    result["notes"] = notes(result)
    markdown = render(result)
    write_report(args.out, result, markdown)


if __name__ == "__main__":
    main()
